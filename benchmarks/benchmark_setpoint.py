"""Set-point members on MNIST: do the targets hold on the test split, is the frontier monotone, what
does the controller cost.

  python -m benchmarks.benchmark_setpoint --dataset=npz:/path/to/mnist.npz --out=bench_setpoint.jsonl
  python -m benchmarks.benchmark_setpoint --measure=sparse_l0 --dataset=npz:/path/to/mnist.npz
  python -m benchmarks.benchmark_setpoint --quick      # CI: the digits, tiny; the numbers mean nothing

Parts (`--measure`, default all):
- vae_kl: the VAE 784-400-20 (batch 128, `--num_steps`) with `kl_target` in {1, 2, 4, 8, 16, 24, 32,
  48} nats, one 8-member program, against an 8-member sweep over beta (0.25 ... 8) of the same steps,
  timed in one run (targets, beta, then targets again: the ratio uses the mean of the two target runs).
  Printed per target: the test KL (eval.json's elbo_kl), its relative error, the reconstruction and
  the -ELBO; whether the KL and the reconstruction are monotone in the target; the wall-time ratio.
- sparse_l0: a one-layer sparse autoencoder 784-1024 (ReLU code, L1 penalty, linear encoder as in the
  SAE literature) with `l0_target` in {5, 10, 20, 40, 80}, against TopK with k = each target (AuxK on):
  per target the test L0, fraction of variance explained, dead fraction, for both.
- geco: the VAE with `reconstruction_target` (GECO) at 1.05x the plain VAE's test reconstruction error
  (measured first, beta = 1), beside the plain one: the achieved error and the KL it costs.
"""

import math
import tempfile
import time

from absl import app
from absl import flags

from ae_jax import cli
from benchmarks import harness

_MEASURE = flags.DEFINE_enum("measure", "all", ["vae_kl", "sparse_l0", "geco", "all"], "Which measurement to run.")
KL_TARGETS = (1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0)
BETAS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0)
L0_TARGETS = (5.0, 10.0, 20.0, 40.0, 80.0)
GECO_SLACK = 1.05  # The reconstruction target: 5% above the plain VAE's.


def _monotone(values) -> bool:
  diffs = [b - a for a, b in zip(values, values[1:])]
  return all(d > 0 for d in diffs) or all(d < 0 for d in diffs)


def _vae_config(dataset: str, num_steps: int, quick: bool, **overrides):
  log_every = 3 if quick else 100
  last = log_every * math.ceil(num_steps / log_every)
  return harness.family_config("vae", 32 if quick else 128, widths=(16,) if quick else (400,),
                               latent_dim=4 if quick else 20, dataset=dataset, num_steps=last, evaluate="quick",
                               num_pictures=0, log_every=log_every, eval_every=last, checkpoint_every=last,
                               **overrides)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def run_vae_kl(dataset: str, num_steps: int, quick: bool) -> list[dict]:
  from ae_jax import sweep  # pylint: disable=g-import-not-at-top  # Loads JAX.

  targets, betas = (KL_TARGETS[:2], BETAS[:2]) if quick else (KL_TARGETS, BETAS)
  held = _vae_config(dataset, num_steps, quick, kl_target=targets[0])
  plain = _vae_config(dataset, num_steps, quick)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    out, first = _timed(lambda: sweep.run(held, [{"kl_target": t} for t in targets], f"{tmp}/targets"))
    _, beta_s = _timed(lambda: sweep.run(plain, [{"beta": b} for b in betas], f"{tmp}/beta"))
    _, second = _timed(lambda: sweep.run(held, [{"kl_target": t} for t in targets], f"{tmp}/targets2"))
  for row in out["rows"]:
    kl = row.get("elbo_kl", math.nan)
    rows.append({"part": "vae_kl", "kl_target": row["kl_target"], "test_kl": kl,
                 "relative_error": kl / row["kl_target"] - 1.0, "within_5pct": abs(kl / row["kl_target"] - 1) <= 0.05,
                 "test_reconstruction": row.get("elbo_reconstruction"), "test_negative_elbo": row.get("negative_elbo"),
                 "status": row["status"]})
  kls = [r["test_kl"] for r in rows]
  summary = {"part": "vae_kl_summary", "dataset": dataset, "num_steps": held.num_steps, "members": len(targets),
             "targets_within_5pct": sum(r["within_5pct"] for r in rows), "kl_monotone": _monotone(kls),
             "reconstruction_monotone": _monotone([r["test_reconstruction"] for r in rows]),
             "targets_s": [first, second], "beta_sweep_s": beta_s,
             "time_over_beta_sweep": (first + second) / 2 / beta_s}
  return rows + [summary]


def run_sparse_l0(dataset: str, num_steps: int, quick: bool) -> list[dict]:
  from ae_jax import sweep  # pylint: disable=g-import-not-at-top

  targets = (2.0, 4.0) if quick else L0_TARGETS
  log_every = 3 if quick else 100
  last = log_every * math.ceil(num_steps / log_every)
  common = dict(dataset=dataset, widths=(), latent_dim=16 if quick else 1024, num_steps=last, evaluate="sparsity",
                num_pictures=0, log_every=log_every, eval_every=last, checkpoint_every=last)
  l1 = harness.family_config("sparse", 32 if quick else 128, sparsity="l1", code_activation="relu",
                             sparsity_weight=1e-3, l0_target=targets[0], **common)
  topk = harness.family_config("sparse", 32 if quick else 128, sparsity="topk", code_activation="linear",
                               topk=int(targets[0]), auxk=8 if quick else 256, **common)
  with tempfile.TemporaryDirectory() as tmp:
    held, held_s = _timed(lambda: sweep.run(l1, [{"l0_target": t} for t in targets], f"{tmp}/l1"))
    base, base_s = _timed(lambda: sweep.run(topk, [{"topk": int(t)} for t in targets], f"{tmp}/topk"))
  rows = []
  for t, a, b in zip(targets, held["rows"], base["rows"]):
    rows.append({"part": "sparse_l0", "l0_target": t, "l1_test_l0": a.get("l0"),
                 "l1_relative_error": a.get("l0", math.nan) / t - 1.0,
                 "l1_within_5pct": abs(a.get("l0", math.nan) / t - 1.0) <= 0.05,
                 "l1_fve": a.get("fraction_variance_explained"), "l1_dead_fraction": a.get("dead_fraction"),
                 "l1_status": a["status"], "topk_test_l0": b.get("l0"),
                 "topk_fve": b.get("fraction_variance_explained"),
                 "topk_dead_fraction": b.get("dead_fraction"), "topk_status": b["status"]})
  summary = {"part": "sparse_l0_summary", "dataset": dataset, "num_steps": last,
             "targets_within_5pct": sum(r["l1_within_5pct"] for r in rows),
             "l1_fve_monotone_in_l0": _monotone([r["l1_fve"] for r in rows]), "l1_s": held_s, "topk_s": base_s}
  return rows + [summary]


def run_geco(dataset: str, num_steps: int, quick: bool) -> list[dict]:
  from ae_jax import sweep  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    plain = sweep.run(_vae_config(dataset, num_steps, quick), [{"seed": 0}], f"{tmp}/plain")["rows"][0]
    target = round(GECO_SLACK * plain["elbo_reconstruction"], 2)
    held = sweep.run(_vae_config(dataset, num_steps, quick, reconstruction_target=target), [{"seed": 0}],
                     f"{tmp}/geco")["rows"][0]
  achieved = held["elbo_reconstruction"]
  return [{"part": "geco", "dataset": dataset, "num_steps": num_steps,
           "plain_reconstruction": plain["elbo_reconstruction"],
           "plain_kl": plain["elbo_kl"], "plain_negative_elbo": plain["negative_elbo"],
           "reconstruction_target": target, "geco_reconstruction": achieved,
           "relative_error": achieved / target - 1.0, "within_5pct": abs(achieved / target - 1.0) <= 0.05,
           "geco_kl": held["elbo_kl"], "kl_saved_nats": plain["elbo_kl"] - held["elbo_kl"],
           "geco_negative_elbo": held["negative_elbo"], "status": held["status"]}]


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --dataset=npz:mnist.npz --measure=vae_kl")
  harness.set_defaults(dataset="digits")  # Real data: a frontier of random images means nothing.
  quick = harness.QUICK.value
  steps = 9 if quick else harness.NUM_STEPS.value
  dataset = "digits" if quick else harness.DATASET.value
  with harness.json_lines(harness.OUT.value) as emit, cli.clear_errors():
    emit(harness.device_info())
    for part, fn in (("vae_kl", run_vae_kl), ("sparse_l0", run_sparse_l0), ("geco", run_geco)):
      if _MEASURE.value in (part, "all"):
        for row in fn(dataset, steps, quick):
          emit(row)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
