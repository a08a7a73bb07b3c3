"""What a sweep reports: every member's metrics, their mean and spread over seeds, and the best setting.

A sweep's rows (one per member: its name, swept values, status and metrics) become sweep.csv (for
pandas or a spreadsheet), sweep.md (the same tables printed at the end of a sweep) and sweep.png
(each metric some member measured against the first swept key). A metric no member measured (e.g. one
a quick evaluation skips) gets no column and no panel. Only members whose status is "done" and whose
metric is finite count in means, spreads and the ranking: a diverged seed is reported, not averaged in.
The spread over seeds is the population standard deviation (ddof=0): seeds 1.0 and 3.0 give 2 ± 1.

`--select` ranks settings (the swept values but the seed) by their mean over seeds, those whose every
seed counts first (`order`, which successive halving and PBT rank with too), and names the best
setting and its best seed.
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
MEAN_DIGITS = 3  # Significant digits of a "mean ± std" cell.
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


def order(scores: dict[Any, Sequence[float]], *, sense: str = "min") -> list[Any]:
  """The settings (keys of `scores`, each with its members' scores) best first.

  A setting whose every member has a finite score ranks before one with a non-finite score (a diverged
  or unfinished seed); then by the mean of its finite scores (lowest first for "min"); ties and settings
  with no finite score go in listed order. Halving's survivors, PBT's parents and --select all rank so.
  """
  listed = list(scores)

  def key(setting):
    finite = [float(v) for v in scores[setting] if v is not None and math.isfinite(v)]
    mean = float(np.mean(finite)) if finite else math.inf
    return (len(finite) < len(scores[setting]), mean if sense == "min" or not finite else -mean,
            listed.index(setting))

  return sorted(listed, key=key)


def rank(rows: list[dict[str, Any]], metric: str, *, swept_keys: Sequence[str] = ()) -> list[dict[str, Any]]:
  """The settings of the rows ranked by `metric` (`order`), best first: each a dict with the setting's
  swept values ("values": {key: value}, the seed left out), "rows", the mean, std and count of its
  counted values ("mean", "std", "n") and its best member ("best"). Settings with no counted value
  are left out. Without swept seeds, every member is its own setting.

  `metric` may be prefixed "max:" or "min:"; otherwise accuracies, likelihoods, PSNRs, active units,
  explained variance and ELBOs are maximised and everything else (losses, errors) minimised. Raises
  SweepError, listing the metrics there are, when no row reports `metric` at all.
  """
  name, sense = direction(metric)
  if not any(name in row for row in rows):
    available = metric_names(rows, swept_keys=swept_keys)
    raise sweep_spec.SweepError(f"no member reports metric {name!r}; metrics: {', '.join(available) or 'none'}")
  keys = [k for k in swept_keys if k != SEED_KEY]
  groups: dict[Any, list[int]] = {}
  for i, row in enumerate(rows):
    setting = tuple(_hashable(row.get(k)) for k in keys) if SEED_KEY in swept_keys else i
    groups.setdefault(setting, []).append(i)
  scores = {s: [_counted(rows[i], name) for i in members] for s, members in groups.items()}
  out = []
  for setting in order({s: [math.nan if v is None else v for v in values] for s, values in scores.items()},
                       sense=sense):
    counted = [(v, i) for v, i in zip(scores[setting], groups[setting]) if v is not None]
    if not counted:
      continue
    values = [v for v, _ in counted]
    _, index = min(counted, key=lambda c: (c[0] if sense == "min" else -c[0], c[1]))
    out.append({"values": {k: rows[index].get(k) for k in keys}, "rows": [rows[i] for i in groups[setting]],
                "mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values), "best": rows[index]})
  return out


def best(rows: list[dict[str, Any]], metric: str, *, swept_keys: Sequence[str] = ()) -> dict[str, Any] | None:
  """The best member of the best setting by `metric` (`rank`), or None if no finished row has a finite
  value; SweepError, listing the metrics there are, when no row reports `metric` at all."""
  ranked = rank(rows, metric, swept_keys=swept_keys)
  return ranked[0]["best"] if ranked else None


FATE = "fate"  # A search's word on a member: "replaced at step s by m" (PBT), "stopped at rung r" (halving).
VALIDATION = "val/"  # A row's end-of-run metric on the validation split: "val/<metric>".


def selection_key(rows: list[dict[str, Any]], select: str) -> tuple[str, str]:
  """(the row key `select` ranks on, "validation" or "test").

  Selection looks at the validation split when the members have one ("val/<metric>", or "val_loss" for
  test_loss), so the test split is only reported; without one it falls back to the test split, and
  the table says so. The "max:"/"min:" prefix is kept.
  """
  name, _ = direction(select)
  prefix = select[:len(select) - len(name)]
  # test_loss and a user term's test_loss_<term> have the validation losses val_loss, val_loss_<term>.
  validation = "val_" + name.removeprefix("test_") if name.startswith("test_loss") else VALIDATION + name
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


def measured(rows: list[dict[str, Any]], metrics: Sequence[str], *, counted: bool = False) -> list[str]:
  """The `metrics` some row has a finite value of (`counted`: some finished row): the table's columns
  (and, counted, the picture's panels); a metric no member measured would be an empty column."""
  value = _counted if counted else lambda row, m: _number(row.get(m))
  return [m for m in metrics if any(value(row, m) is not None for row in rows)]


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


def _stat(mean: float, std: float) -> str:
  """'0.0138 ± 0.000228': a mean and its spread to MEAN_DIGITS significant digits each."""
  if math.isnan(mean):
    return NA
  return f"{mean:.{MEAN_DIGITS}g} ± {std:.{MEAN_DIGITS}g}"


def _table(header: Sequence[str], body: list[list[str]]) -> list[str]:
  """A GitHub table, pipes in cells escaped."""
  escape = lambda cell: cell.replace("|", "&#124;")
  lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in body]
  return lines


def _best_line(rows: list[dict[str, Any]], select: str, swept_keys: Sequence[str]) -> str:
  name, _ = direction(select)
  key, split = selection_key(rows, select)
  ranked_on = direction(key)[0]
  where = (f"{name} on the validation split" if split == "validation" else
           f"{name} on the test split (no validation split: set --config.validation_fraction to select on one)")
  try:
    ranked = rank(rows, key, swept_keys=swept_keys)
  except sweep_spec.SweepError as e:
    return f"Best by {where}: {NA} ({e})"
  if not ranked:
    return f"Best by {where}: {NA} (no finished member has a finite value)"
  top = ranked[0]
  row = top["best"]
  reported = f"; test {_cell(row.get(name))}" if split == "validation" else ""
  member = f"{row.get('member', NA)} ({_cell(row[ranked_on])}{reported})"
  if SEED_KEY not in swept_keys:
    return f"Best by {where}: {member}"
  setting = ",".join(f"{k}={_cell(v)}" for k, v in top["values"].items()) or "the base config"
  seeds = f"{top['n']} seeds" if top["n"] == len(top["rows"]) else f"{top['n']} of {len(top['rows'])} seeds"
  if split == "validation":
    tested = [v for v in (_counted(r, name) for r in top["rows"]) if v is not None]
    reported = f"; test {_stat(float(np.mean(tested)), float(np.std(tested)))}" if tested else ""
  return (f"Best by {where}: {setting} (mean {_stat(top['mean'], top['std'])} over {seeds}{reported}); "
          f"its best seed: {member}")


def format_text(rows: list[dict[str, Any]], *, swept_keys: Sequence[str], metrics: Sequence[str],
                select: str | None = None) -> str:
  """sweep.md's content: the members, "mean ± std over seeds" when seeds are swept, the best setting.

  Only the `metrics` some member measured get a column."""
  metrics = measured(rows, metrics)
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
      stats = [_stat(group[f"{m}_mean"], group[f"{m}_std"]) for m in metrics]
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
    columns = ["member", *swept_keys, "status", *([FATE] if any(FATE in row for row in rows) else []),
               *measured(rows, metrics)]
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


def x_scale(values: Sequence[Any]) -> str:
  """How the panels draw the swept values: "log" when they are positive numbers spanning a decade or
  more, "symlog" when a 0 joins such values, "linear" for other numbers, else "category"."""
  if not _numeric_axis(list(values)):
    return "category"
  positive = [float(v) for v in values if float(v) > 0]
  if positive and min(float(v) for v in values) >= 0 and max(positive) >= 10 * min(positive):
    return "log" if len(positive) == len(values) else "symlog"
  return "linear"


def save_png(path: str, rows: list[dict[str, Any]], *, swept_keys: Sequence[str], metrics: Sequence[str],
             title: str = "") -> str:
  """One panel per metric a finished member measured (`panels`) against the first non-seed swept key
  (Agg, no display), three panels a row.

  One line per combination of the other non-seed keys, at the mean over seeds with std error bars;
  a numeric x whose positive values span a decade or more is drawn on a log axis (symmetric log with a
  0 among them), any other x as categories. With only seeds swept, each seed's value is a dot. The
  panels' metrics are in the PNG's "Description" text.
  """
  from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top

  shown = panels(rows, metrics)
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
    scale = x_scale(xs)
    numeric = scale != "category"
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
    if scale == "log":
      ax.set_xscale("log")
    elif scale == "symlog":
      ax.set_xscale("symlog", linthresh=min(float(x) for x in xs if float(x) > 0))
    if not numeric or len(xs) <= 8:  # Few values: tick each one.
      ax.set_xticks([position[x] for x in xs], [_cell(x) for x in xs])
      ax.minorticks_off()
    ax.set_xlabel(x_key)
    if line_keys and ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  with workdir_lib.atomic(path) as temporary:
    fig.savefig(temporary, format="png", metadata={"Description": "panels: " + ", ".join(shown)})
  return path


def panels(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[str]:
  """sweep.png's panels: the `metrics` some finished member has a finite value of, every one."""
  return measured(rows, metrics, counted=True)
