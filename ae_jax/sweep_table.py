"""What a sweep reports: every member's metrics, their mean and spread over seeds, and the best member.

A sweep's rows (one per member: its name, swept values, status and metrics) become sweep.csv (for
pandas or a spreadsheet), sweep.md (the same tables printed at the end of a sweep) and sweep.png
(each metric against the first swept key). Only members whose status is "done" and whose metric is
finite count in means, spreads and the best member: a diverged seed is reported, not averaged in.
The spread over seeds is the population standard deviation (ddof=0): seeds 1.0 and 3.0 give 2 ± 1.
"""

from collections.abc import Sequence
import csv
import io
import math
import os
from typing import Any

import numpy as np

from ae_jax import sweep_spec
from ae_jax import workdir as workdir_lib

NA = "—"
DONE = "done"
SEED_KEY = sweep_spec.SEED_KEY
MAX_PLOTS = 6
# Metric names containing one of these are maximised; all others are minimised (losses, errors).
MAXIMISE = ("accuracy", "log_likelihood", "psnr", "active_units", "fraction_variance_explained", "elbo")
# ...except these, which contain "elbo" but are terms of the negative ELBO, so lower is better.
MINIMISE = ("negative_elbo", "elbo_reconstruction", "elbo_kl")


def _number(value: Any) -> float | None:
  """A finite float, or None for anything missing, non-numeric or not finite."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _counted(row: dict[str, Any], metric: str) -> float | None:
  """The row's metric if it counts: a finished member with a finite value."""
  return _number(row.get(metric)) if row.get("status") == DONE else None


def _hashable(value: Any) -> Any:
  return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def aggregate(rows: list[dict[str, Any]], *, swept_keys: Sequence[str], metrics: Sequence[str]
              ) -> list[dict[str, Any]]:
  """Mean and std (ddof=0) of each metric over seeds, per combination of the other swept keys.

  Each result has the other swept keys' values, "n" (finished seeds), "runs" (seeds in the group),
  and per metric f"{metric}_mean", f"{metric}_std" (NaN when no seed counts) and f"{metric}_n".
  Groups are in first-seen order. Returns [] when seeds are not swept.
  """
  if SEED_KEY not in swept_keys:
    return []
  keys = [k for k in swept_keys if k != SEED_KEY]
  groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault(tuple(_hashable(row.get(k)) for k in keys), []).append(row)
  out = []
  for values, members in groups.items():
    result: dict[str, Any] = dict(zip(keys, values))
    result["n"] = sum(row.get("status") == DONE for row in members)
    result["runs"] = len(members)
    for metric in metrics:
      finite = [v for v in (_counted(row, metric) for row in members) if v is not None]
      result[f"{metric}_mean"] = float(np.mean(finite)) if finite else math.nan
      result[f"{metric}_std"] = float(np.std(finite)) if finite else math.nan
      result[f"{metric}_n"] = len(finite)
    out.append(result)
  return out


def direction(metric: str) -> tuple[str, str]:
  """(name, "max" or "min"): from a "max:"/"min:" prefix, else inferred from the name."""
  for prefix in ("max", "min"):
    if metric.startswith(f"{prefix}:"):
      return metric[len(prefix) + 1:], prefix
  lower = metric.lower()
  if any(word in lower for word in MINIMISE):
    return metric, "min"
  return metric, "max" if any(word in lower for word in MAXIMISE) else "min"


def best(rows: list[dict[str, Any]], metric: str, *, swept_keys: Sequence[str] = ()) -> dict[str, Any] | None:
  """The finished row with the best finite `metric` (first on ties), or None if no finished row has one.

  `metric` may be prefixed "max:" or "min:"; otherwise accuracies, likelihoods, PSNRs, active units,
  explained variance and ELBOs are maximised and everything else (losses, errors) minimised. Raises
  SweepError, listing the metrics there are, when no row reports `metric` at all.
  """
  name, sense = direction(metric)
  if not any(name in row for row in rows):
    available = metric_names(rows, swept_keys=swept_keys)
    raise sweep_spec.SweepError(f"no member reports metric {name!r}; metrics: {', '.join(available) or 'none'}")
  scored = [(v, i) for i, v in enumerate(_counted(row, name) for row in rows) if v is not None]
  if not scored:
    return None
  _, index = min(scored, key=lambda s: (s[0] if sense == "min" else -s[0], s[1]))
  return rows[index]


FATE = "fate"  # A search's word on a member: "replaced at step s by m" (PBT), "stopped at rung r" (halving).
VALIDATION = "val/"  # A row's end-of-run metric on the validation split: "val/<metric>".


def selection_key(rows: list[dict[str, Any]], select: str) -> tuple[str, str]:
  """(the row key `select` ranks on, "validation" or "test").

  Selection looks at the validation split when the members have one ("val/<metric>", or "val_loss" for
  test_loss), so the test split is only reported; without one it falls back to the test split, and
  the table says so. The "max:"/"min:" prefix is kept.
  """
  name, sense = direction(select)
  prefix = select[:len(select) - len(name)]
  validation = "val_loss" if name == "test_loss" else VALIDATION + name
  if any(validation in row for row in rows):
    return prefix + validation, "validation"
  return select, "test"


def metric_names(rows: list[dict[str, Any]], *, swept_keys: Sequence[str] = ()) -> list[str]:
  """Keys with a numeric value in some row, other than the member, its status and the swept keys."""
  skip = {"member", "status", SEED_KEY, *swept_keys}
  names: dict[str, None] = {}
  for row in rows:
    for key, value in row.items():
      if key not in skip and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
          value, bool):
        names[key] = None
  return list(names)


# Text.


def _cell(value: Any) -> str:
  """A value for a table: 4 significant digits, tuples without spaces, NA for missing or NaN."""
  if value is None:
    return NA
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    return f"{float(value):.4g}" if math.isfinite(value) else NA
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(_cell(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  text = " ".join(str(value).split())
  return text or NA


def _table(header: Sequence[str], body: list[list[str]]) -> list[str]:
  """A GitHub table, pipes in cells escaped."""
  escape = lambda cell: cell.replace("|", "&#124;")
  lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in body]
  return lines


def _best_line(rows: list[dict[str, Any]], select: str, swept_keys: Sequence[str]) -> str:
  name, _ = direction(select)
  key, split = selection_key(rows, select)
  ranked = direction(key)[0]
  where = (f"{name} on the validation split" if split == "validation" else
           f"{name} on the test split (no validation split: set --config.validation_fraction to select on one)")
  try:
    row = best(rows, key, swept_keys=swept_keys)
  except sweep_spec.SweepError as e:
    return f"Best by {where}: {NA} ({e})"
  if row is None:
    return f"Best by {where}: {NA} (no finished member has a finite value)"
  reported = f"; test {_cell(row.get(name))}" if split == "validation" else ""
  return f"Best by {where}: {row.get('member', NA)} ({_cell(row[ranked])}{reported})"


def format_text(rows: list[dict[str, Any]], *, swept_keys: Sequence[str], metrics: Sequence[str],
                select: str | None = None) -> str:
  """sweep.md's content: the members, "mean ± std over seeds" when seeds are swept, the best member."""
  fate = [FATE] if any(FATE in row for row in rows) else []
  header = ["member", *swept_keys, "status", *fate, *metrics]
  body = [[_cell(row.get("member")), *(_cell(row.get(k)) for k in swept_keys), _cell(row.get("status")),
           *(_cell(row.get(f)) for f in fate), *(_cell(row.get(m)) for m in metrics)] for row in rows]
  lines = _table(header, body)
  groups = aggregate(rows, swept_keys=swept_keys, metrics=metrics)
  if groups:
    keys = [k for k in swept_keys if k != SEED_KEY]
    lines += ["", "mean ± std over seeds (population std, ddof=0; only finished seeds with finite values):",
              ""]
    body = []
    for group in groups:
      stats = []
      for m in metrics:
        mean, std = group[f"{m}_mean"], group[f"{m}_std"]
        stats.append(NA if math.isnan(mean) else f"{_cell(mean)} ± {_cell(std)}")
      body.append([*(_cell(group[k]) for k in keys), f"{group['n']}/{group['runs']}", *stats])
    lines += _table([*keys, "n", *metrics], body)
  if select:
    lines += ["", _best_line(rows, select, swept_keys)]
  return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> str:
  """Full precision for the CSV: floats as repr ('nan' kept), missing as ''."""
  if value is None:
    return ""
  if isinstance(value, (float, np.floating)):
    return repr(float(value))
  if isinstance(value, (list, tuple)):
    return _cell(value)
  return str(value)


def write(workdir: str, rows: list[dict[str, Any]], *, swept_keys: Sequence[str], metrics: Sequence[str],
          select: str | None = None, title: str = "") -> dict[str, str]:
  """Writes the tables (`workdir.sweep_tables`: csv, markdown, png); returns their paths."""
  os.makedirs(workdir, exist_ok=True)
  paths = workdir_lib.sweep_tables(workdir)
  with io.StringIO(newline="") as f:  # Written whole by a rename (workdir.write_text): never a torn table.
    writer = csv.writer(f)
    columns = ["member", *swept_keys, "status", *([FATE] if any(FATE in row for row in rows) else []), *metrics]
    writer.writerow(columns)
    for row in rows:
      writer.writerow([_csv_value(row.get(k)) for k in columns])
    workdir_lib.write_text(paths["csv"], f.getvalue())
  text = format_text(rows, swept_keys=swept_keys, metrics=metrics, select=select)
  workdir_lib.write_text(paths["markdown"], f"# {title}\n\n{text}" if title else text)
  save_png(paths["png"], rows, swept_keys=swept_keys, metrics=metrics, title=title)
  return paths


# Picture.


def _numeric_axis(values: list[Any]) -> bool:
  return bool(values) and all(_number(v) is not None for v in values)


def save_png(path: str, rows: list[dict[str, Any]], *, swept_keys: Sequence[str], metrics: Sequence[str],
             title: str = "") -> str:
  """One panel per metric (the first MAX_PLOTS) against the first non-seed swept key (Agg, no display).

  One line per combination of the other non-seed keys, at the mean over seeds with std error bars;
  a numeric x with positive values spanning over 10x is drawn on a log axis, any other x as
  categories. With only seeds swept, each seed's value is a dot.
  """
  from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top

  shown = list(metrics)[:MAX_PLOTS]
  keys = [k for k in swept_keys if k != SEED_KEY]
  columns = min(3, max(1, len(shown)))
  grid_rows = max(1, math.ceil(len(shown) / columns))
  fig = mpl_figure.Figure(figsize=(4.5 * columns, 3.4 * grid_rows + (0.4 if title else 0)), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  if title:
    fig.suptitle(title)
  if not shown:
    fig.text(0.5, 0.5, "no metrics", ha="center", va="center")
  finished = [row for row in rows if row.get("status") == DONE]
  if keys:
    x_key, line_keys = keys[0], keys[1:]
    xs = list(dict.fromkeys(_hashable(row.get(x_key)) for row in rows))
    numeric = _numeric_axis(xs)
    log = numeric and min(xs) > 0 and max(xs) > 10 * min(xs)
    if numeric:
      xs = sorted(xs)
    position = {x: (float(x) if numeric else i) for i, x in enumerate(xs)}
    groups: dict[tuple[Any, ...], dict[Any, list[dict[str, Any]]]] = {}
    for row in rows:
      line = tuple(_hashable(row.get(k)) for k in line_keys)
      groups.setdefault(line, {}).setdefault(_hashable(row.get(x_key)), []).append(row)
  for i, metric in enumerate(shown):
    ax = fig.add_subplot(grid_rows, columns, i + 1)
    ax.set_title(metric, fontsize=10)
    ax.grid(True, alpha=0.3)
    if not keys:  # Only seeds (or nothing) swept: one dot per member.
      points = [(j, _counted(row, metric)) for j, row in enumerate(finished)]
      points = [(j, v) for j, v in points if v is not None]
      ax.plot([j for j, _ in points], [v for _, v in points], "o")
      labels = [_cell(row.get(SEED_KEY, row.get("member"))) for row in finished]
      ax.set_xticks(range(len(finished)), labels)
      ax.set_xlabel(SEED_KEY if SEED_KEY in swept_keys else "member")
      continue
    for line, by_x in groups.items():
      points = []
      for x in xs:
        values = [v for v in (_counted(row, metric) for row in by_x.get(x, [])) if v is not None]
        if values:
          points.append((position[x], float(np.mean(values)), float(np.std(values))))
      if not points:
        continue
      label = ", ".join(f"{k}={_cell(v)}" for k, v in zip(line_keys, line)) or None
      ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                  capsize=3, label=label)
    if log:
      ax.set_xscale("log")
    if not numeric or len(xs) <= 8:  # Few values: tick each one.
      ax.set_xticks([position[x] for x in xs], [_cell(x) for x in xs])
      ax.minorticks_off()
    ax.set_xlabel(x_key)
    if line_keys and ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  with workdir_lib.atomic(path) as temporary:
    fig.savefig(temporary, format="png")
  return path
