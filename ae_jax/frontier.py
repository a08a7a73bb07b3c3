"""A sweep over set-point targets draws a frontier: frontier.md, frontier.csv and frontier.png.

Each setting (the swept values but the seed) is one point: its target, the value its members achieved
on the test split (`SetPoint.metric` of eval.json: the KL, L0, reconstruction error or Jacobian norm),
whether that is within 5% of the target, the coefficient the controller ended at, and the family's
other side of the trade-off (`SetPoint.frontier`: distortion and log p(x) against the rate for the
VAE, explained variance and dead units against L0 for sparse codes), as mean ± std over seeds.
The picture draws achieved against target (the diagonal is a perfect controller) and each trade-off
metric against the achieved value, seeds as error bars.
"""

from collections.abc import Sequence
import csv
import io
import math
from typing import Any

from matplotlib import figure as mpl_figure
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np

from ae_jax import families
from ae_jax import setpoint
from ae_jax import sweep_spec
from ae_jax import workdir as workdir_lib

SPLIT = "test"  # The frontier reports; it chooses nothing, so it is measured on the test split.


def target_key(configs: Sequence[Any], swept_keys: Sequence[str]) -> str | None:
  """The target this sweep holds: a swept target key, else the one its configs set; None if none."""
  swept = [k for k in swept_keys if k in setpoint.TARGETS]
  if swept:
    return swept[0]
  active = {k for c in configs for k in setpoint.active(c)}
  return sorted(active)[0] if len(active) == 1 else None


def _stats(values: list[float]) -> tuple[float, float]:
  values = [v for v in values if v is not None and math.isfinite(v)]
  return (float(np.mean(values)), float(np.std(values))) if values else (math.nan, math.nan)


def points(configs: Sequence[Any], rows: Sequence[dict[str, Any]], results: Sequence[workdir_lib.Result],
           swept_keys: Sequence[str]) -> tuple[setpoint.SetPoint, list[dict[str, Any]]] | None:
  """(the set point, one dict per setting: target, achieved, verdict, coefficient, trade-off metrics as
  (mean, std), n seeds), or None when no member of the sweep holds a target."""
  key = target_key(configs, swept_keys)
  if key is None:
    return None
  point = families.get(configs[0].family).setpoints.get(key)
  if point is None:
    return None
  setting_keys = [k for k in swept_keys if k != sweep_spec.SEED_KEY]
  groups: dict[tuple[Any, ...], list[int]] = {}
  for i, row in enumerate(rows):
    groups.setdefault(tuple(str(row.get(k)) for k in setting_keys), []).append(i)
  out = []
  for members in groups.values():
    done = [i for i in members if results[i] is not None and results[i].done]
    config = configs[members[0]]
    target = float(config[key])
    entry = {"setting": {k: rows[members[0]].get(k) for k in setting_keys}, "target": target, "n": len(done),
             "runs": len(members)}
    entry["achieved"] = _stats([rows[i].get(point.metric) for i in done])
    entry["coefficient"] = _stats([results[i].train.get(setpoint.COEFFICIENT, math.nan) for i in done])
    for metric in point.frontier:
      entry[metric] = _stats([rows[i].get(metric) for i in done])
    verdict = setpoint.achieved(point, target, entry["achieved"][0]) if target > 0 else "no target"
    coefficient = entry["coefficient"][0]
    if verdict.startswith("missed") and math.isfinite(coefficient) and not (
        setpoint.COEFFICIENT_MIN * 1.01 < coefficient < setpoint.COEFFICIENT_MAX / 1.01):
      verdict += " (coefficient at its bound: unreachable)"
    entry["verdict"] = verdict
    out.append(entry)
  out.sort(key=lambda e: e["target"])
  return point, out


def monotone(values: Sequence[float]) -> bool:
  """Strictly increasing or strictly decreasing (NaNs ignored)."""
  finite = [v for v in values if math.isfinite(v)]
  steps = np.diff(finite)
  return len(finite) < 2 or bool(np.all(steps > 0) or np.all(steps < 0))


def _cell(mean: float, std: float, n: int) -> str:
  if not math.isfinite(mean):
    return "—"
  return f"{mean:.3g}" + (f" ± {std:.2g}" if n > 1 else "")


def measured(point: setpoint.SetPoint, entries: list[dict[str, Any]]) -> list[str]:
  """The trade-off metrics some setting has a value of (a quick evaluation skips the likelihood)."""
  return [m for m in point.frontier if any(math.isfinite(e[m][0]) for e in entries)]


def format_text(point: setpoint.SetPoint, entries: list[dict[str, Any]]) -> str:
  """frontier.md: the targets and what was achieved side by side, then the trade-off."""
  shown = measured(point, entries)
  header = ["target " + point.target, f"achieved {point.metric}", "verdict", f"final {point.coefficient}",
            *shown, "n"]
  lines = [f"Frontier of {point.what} ({point.target} adapts {point.coefficient}); measured on the {SPLIT} split, "
           "mean ± std over seeds (ddof=0).", "",
           "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  for e in entries:
    cells = [f"{e['target']:g}" if e["target"] > 0 else "off", _cell(*e["achieved"], e["n"]), e["verdict"],
             _cell(*e["coefficient"], e["n"]), *(_cell(*e[m], e["n"]) for m in shown),
             f"{e['n']}/{e['runs']}"]
    lines.append("| " + " | ".join(cells) + " |")
  targeted = [e for e in entries if e["target"] > 0]
  met = sum(e["verdict"] == "met" for e in targeted)
  achieved = [e["achieved"][0] for e in targeted]
  lines += ["", f"{met} of {len(targeted)} targets met within {100 * setpoint.MET_TOLERANCE:.0f}%; achieved "
            f"{point.metric} {'is' if monotone(achieved) else 'is NOT'} monotone in the target."]
  distortion = shown[0] if shown else None  # The other side of the trade-off.
  values = [e[distortion][0] for e in targeted] if distortion else []
  if sum(math.isfinite(v) for v in values) > 1:
    lines.append(f"{distortion} {'is' if monotone(values) else 'is NOT'} monotone along the frontier.")
  return "\n".join(lines) + "\n"


def save_png(path: str, point: setpoint.SetPoint, entries: list[dict[str, Any]], *, title: str = "") -> str:
  """Achieved against target (log-log, the diagonal dashed), then each trade-off metric against achieved."""
  panels = measured(point, entries)
  fig = mpl_figure.Figure(figsize=(4.2 * (1 + len(panels)), 3.8), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.subplots(1, 1 + len(panels), squeeze=False)[0]
  targeted = [e for e in entries if e["target"] > 0]
  ax = axes[0]
  t = np.array([e["target"] for e in targeted])
  a, a_std = np.array([e["achieved"][0] for e in targeted]), np.array([e["achieved"][1] for e in targeted])
  ax.errorbar(t, a, yerr=a_std, fmt="o", capsize=3)
  if len(t):
    ax.plot([t.min(), t.max()], [t.min(), t.max()], "k--", lw=0.8, label="achieved = target")
    ax.set_xscale("log" if t.min() > 0 and t.max() / t.min() >= 10 else "linear")
    ax.set_yscale(ax.get_xscale())
    for axis in (ax.xaxis, ax.yaxis):  # Ticks at the targets, as plain numbers.
      axis.set_ticks(t)
      axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
      axis.set_minor_formatter(ticker.NullFormatter())
    ax.legend(fontsize=8)
  ax.set_xlabel(point.target)
  ax.set_ylabel(f"{point.metric} ({SPLIT})")
  for ax, metric in zip(axes[1:], panels):
    for e in entries:
      ax.errorbar(e["achieved"][0], e[metric][0], xerr=e["achieved"][1], yerr=e[metric][1],
                  fmt="o" if e["target"] > 0 else "s", color="C0" if e["target"] > 0 else "C1", capsize=3)
      label = f"{e['target']:g}" if e["target"] > 0 else "off"
      ax.annotate(label, (e["achieved"][0], e[metric][0]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{point.metric} ({SPLIT})")
    ax.set_ylabel(metric)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  with workdir_lib.atomic(path) as temporary:
    fig.savefig(temporary, format="png")
  return path


def write(workdir: str, configs: Sequence[Any], rows: Sequence[dict[str, Any]],
          results: Sequence[workdir_lib.Result], swept_keys: Sequence[str], *, title: str = ""
          ) -> dict[str, str]:
  """Writes frontier.md, frontier.csv and frontier.png when the sweep holds a target; returns their paths
  ({} when it does not)."""
  found = points(configs, rows, results, swept_keys)
  if found is None:
    return {}
  point, entries = found
  paths = workdir_lib.frontier_tables(workdir)
  workdir_lib.write_text(paths["markdown"], (f"# {title}\n\n" if title else "") + format_text(point, entries))
  columns = ["target", "achieved_mean", "achieved_std", "verdict", "coefficient_mean", "n", "runs"]
  for metric in measured(point, entries):
    columns += [f"{metric}_mean", f"{metric}_std"]
  with io.StringIO(newline="") as f:  # Written whole by a rename (workdir.write_text), as sweep.csv.
    writer = csv.writer(f)
    writer.writerow([*entries[0]["setting"], *columns] if entries else columns)
    for e in entries:
      values = {"target": e["target"], "achieved_mean": e["achieved"][0], "achieved_std": e["achieved"][1],
                "verdict": e["verdict"], "coefficient_mean": e["coefficient"][0], "n": e["n"], "runs": e["runs"]}
      for metric in point.frontier:
        values[f"{metric}_mean"], values[f"{metric}_std"] = e[metric]
      writer.writerow([*e["setting"].values(), *(values[c] for c in columns)])
    workdir_lib.write_text(paths["csv"], f.getvalue())
  save_png(paths["png"], point, entries, title=title)
  return paths
