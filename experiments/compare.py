"""Trains all five families on one dataset and tabulates their measured test metrics side by side.

  python experiments/compare.py                                  # digits, about 1.5 min on 2 CPU cores
  python experiments/compare.py --dataset=mnist --num_steps=5000 --workdir=runs/compare_mnist

Each family trains with its own config (experiments/configs/<family>.py) into <workdir>/<family>, as
one sweep over the families (`ae_jax.sweep`, which also writes sweep.md); a previous comparison there
is replaced, so the table never mixes in an older, longer run. The table goes to
<workdir>/comparison.md and comparison.png and is printed.
"""

import json
import math
import os
import sys
import textwrap
from typing import Any

from absl import app
from absl import flags
from absl import logging

from ae_jax import cli
from ae_jax import families
from ae_jax import workdir as workdir_lib

FAMILIES = families.NAMES
COLUMNS = ("family", "recon MSE", "PCA MSE (k)", "probe acc", "PSNR gain mask 25%", "PSNR gain Gauss 0.3",
           "‖J‖²_F", "L0 / k", "dead", "ELBO / log p(x)", "key idea", "main use")
NA = "—"

_EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))


def define_flags() -> None:
  """Defined when run as a script, so importing `compare` (tests) cannot clash with other scripts' flags."""
  flags.DEFINE_string("dataset", "digits", "Any ae_jax dataset: digits, a tfds name, or npz:PATH.")
  flags.DEFINE_integer("num_steps", None, "Training steps for every family (default: each config's, 3000).",
                       lower_bound=1)
  flags.DEFINE_string("workdir", os.path.join("runs", "compare"), "Where the runs and the table go.")


def family_config(family: str, *, dataset: str, num_steps: int | None,
                  overrides: dict[str, Any] | None = None):
  """The family's config file with the comparison's dataset, steps and `overrides`; runs start afresh."""
  if _EXPERIMENTS not in sys.path:  # Config files import their default as `configs.default`.
    sys.path.insert(0, _EXPERIMENTS)
  import configs  # pylint: disable=g-import-not-at-top

  config = configs.get(family, dataset=dataset, overwrite=True)
  config.num_steps = num_steps or config.num_steps
  config.update(overrides or {})
  return config


def _number(value: float | None, spec: str) -> str:
  return NA if value is None or not math.isfinite(value) else format(value, spec)


def table_rows(results: dict[str, dict[str, Any]], configs: dict[str, Any]) -> list[list[str]]:
  """One row of COLUMNS per family from its `train_and_evaluate` result (None: training failed)."""
  rows = []
  for family, result in results.items():
    idea, use = families.get(family).idea, families.get(family).use
    if result is None:
      rows.append([family] + [NA] * (len(COLUMNS) - 3) + [idea, use])
      continue
    m, k = result.eval, configs[family].latent_dim
    elbo = (f"{_number(-m['negative_elbo'], '.1f')} / {_number(m['log_likelihood'], '.1f')}"
            if "log_likelihood" in m else NA)
    rows.append([
        family, _number(m["mse"], ".4f"), f"{_number(m['pca_mse'], '.4f')} ({k})",
        _number(m.get("probe_accuracy"), ".3f"), _number(m["psnr_gain/masking_0.25"], "+.2f"),
        _number(m["psnr_gain/gaussian_0.3"], "+.2f"), _number(m["jacobian_frobenius_sq"], ".3g"),
        f"{_number(m['l0'], '.1f')} / {k} (>{m['l0_threshold']:g})" if "l0" in m else NA,  # Not for the VAE.
        _number(m.get("dead_fraction"), ".2f"),
        elbo, idea, use])
  return rows


def caption(results: dict[str, dict[str, Any]], configs: dict[str, Any], dataset: str) -> str:
  """What the numbers are: split, steps, the pixel-probe baseline, units, and any failures."""
  done = {f: r for f, r in results.items() if r is not None}
  any_result = next(iter(done.values()), None)
  steps = ", ".join(f"{f} {configs[f].num_steps}" for f in results)
  pixels = any_result.eval.get("probe_accuracy_pixels") if any_result else None
  vae = configs.get("vae")
  lines = [
      f"Test split of {dataset}, seed {next(iter(configs.values())).seed}; training steps: {steps}.",
      (f"Probe: logistic regression on the codes (VAE: posterior means); on raw pixels it scores "
       f"{pixels:.3f}." if pixels is not None else "Probe: none (the dataset has no labels)."),
      "PCA MSE: PCA with k = the family's latent size fitted on train (k is clamped to the pixel count).",
      "PSNR gain: dB that reconstructing a corrupted test image adds over the (clipped) corrupted image.",
      "‖J‖²_F: squared Frobenius norm of the encoder Jacobian (code w.r.t. input), test-set mean.",
      "L0: code units on per image, of k: |z| above the threshold in brackets (10% of full scale for "
      "sigmoid codes); dead: fraction of units on for no test image.",
      f"ELBO / log p(x): VAE only, nats per image; log p(x) is the IWAE estimate with "
      f"{vae.iwae_samples if vae else NA} samples (≥ ELBO).",
  ]
  lines += [f"{f}: training failed." for f, r in results.items() if r is None]
  return "\n".join(lines)


def markdown(rows: list[list[str]], text: str) -> str:
  """A GitHub table (pipes in cells escaped) and the caption, one line break per caption line."""
  escape = lambda cell: cell.replace("|", "&#124;")
  lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
  lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
  return "\n".join(lines) + "\n\n" + "\n".join(f"{line}  " for line in text.splitlines()) + "\n"


def save_png(path: str, rows: list[list[str]], text: str) -> str:
  """The table as an image (matplotlib's Agg canvas, no display): texts wrapped, caption below."""
  from matplotlib import figure as mpl_figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top

  widths = [1.1] + [0.85] * (len(COLUMNS) - 3) + [2.6, 2.6]  # Relative; the texts get the room.
  wrap = lambda cell, width: "\n".join(textwrap.wrap(cell, int(width * 14))) or cell
  grid = [[wrap(c, w) for c, w in zip(row, widths)] for row in [list(COLUMNS), *rows]]
  heights = [0.2 * max(c.count("\n") + 1 for c in row) + 0.16 for row in grid]  # Inches.
  caption_height = 0.19 * len(text.splitlines()) + 0.2
  fig_width, fig_height = 20.0, sum(heights) + caption_height + 0.2
  fig = mpl_figure.Figure(figsize=(fig_width, fig_height), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_axes((0.01, caption_height / fig_height, 0.98, sum(heights) / fig_height))
  ax.set_axis_off()
  table = ax.table(cellText=grid[1:], colLabels=grid[0], colWidths=[w / sum(widths) for w in widths],
                   cellLoc="center", bbox=(0.0, 0.0, 1.0, 1.0))
  table.auto_set_font_size(False)
  table.set_fontsize(10)
  for (r, _), cell in table.get_celld().items():
    cell.set_height(heights[r] / sum(heights))
    if r == 0:
      cell.set_facecolor("#dde5f0")
  fig.text(0.01, 0.1 / fig_height, text, fontsize=10, va="bottom", ha="left")
  with workdir_lib.atomic(path) as temporary:
    fig.savefig(temporary, format="png")
  return path


def compare(*, dataset: str = "digits", num_steps: int | None = None,
            workdir: str = os.path.join("runs", "compare"), overrides: dict[str, Any] | None = None
            ) -> dict[str, Any]:
  """Trains every family into workdir/<family>; returns {"results", "markdown", "paths"}.

  A sweep over the families (`ae_jax.sweep`): each member is what its config file changes in the
  default config. `overrides` sets config keys of every family (e.g. {"num_pictures": 0} in tests).
  Raises ConfigError or DataError for bad input. A family whose loss stops being finite gets a row
  of '—' and a note in the caption, so the others still get compared.
  """
  from ae_jax import sweep  # pylint: disable=g-import-not-at-top  # Loads JAX and TensorFlow.

  configs = {f: family_config(f, dataset=dataset, num_steps=num_steps, overrides=overrides) for f in FAMILIES}
  base = family_config("default", dataset=dataset, num_steps=num_steps, overrides=overrides)
  base.overwrite = False
  members = [_changes(base, config) for config in configs.values()]
  out = sweep.run(base, members, workdir, overwrite=True, names=list(FAMILIES))
  results = {f: (r if r.done else None) for f, r in zip(FAMILIES, out["results"])}
  for family, result in zip(FAMILIES, out["results"]):
    if not result.done:
      logging.error("%s: %s", family, result.message)
  rows, text = table_rows(results, configs), caption(results, configs, dataset)
  md = markdown(rows, text)
  paths = workdir_lib.comparison_tables(workdir)
  workdir_lib.write_text(paths["markdown"], md)
  save_png(paths["png"], rows, text)
  return {"results": results, "markdown": md, "paths": paths}


def _changes(base, config) -> dict[str, Any]:
  """The keys where `config` differs from `base`: a family config as a sweep member."""
  return {k: v for k, v in config.items() if k != "overwrite" and json.dumps(v) != json.dumps(base[k])}


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --num_steps=500")
  cli.check_workdir(flags.FLAGS.workdir)
  cli.lock_workdir(flags.FLAGS.workdir)
  with cli.clear_errors():
    cli.use_compilation_cache()
    out = compare(dataset=flags.FLAGS.dataset, num_steps=flags.FLAGS.num_steps, workdir=flags.FLAGS.workdir)
  print(out["markdown"])
  paths = out["paths"]
  runs = os.path.join(flags.FLAGS.workdir, "<family>")
  print(f"Table: {paths['markdown']} and {paths['png']}; runs in {runs}")
  failed = [f for f, r in out["results"].items() if r is None]
  if failed:
    print(f"error: training failed for {', '.join(failed)}; see the log above", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=cli.parse_flags)
