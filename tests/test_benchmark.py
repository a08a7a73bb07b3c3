"""experiments/benchmark.py in --quick mode: it runs and reports every key; no speed is asserted."""

import json
import math
import os
import subprocess
import sys

from absl.testing import flagsaver
import benchmark  # experiments/ is on sys.path (conftest).

from ae_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "benchmark.py")
CASE_KEYS = {"family": str, "batch_size": int, "model": str, "examples_per_s": float, "steps_per_s": float,
             "peak_fraction": float, "bound_examples_per_s": float, "macs_per_example": int,
             "matmul_gflops": float}


def _check_case(row):
  for key, kind in CASE_KEYS.items():
    assert isinstance(row[key], kind), (key, row)
    if kind is not str:
      assert math.isfinite(row[key]) and row[key] > 0, (key, row)
  assert math.isfinite(row["final_loss"]), row


def test_quick_run_reports_contractive_paths_against_the_plain_step():
  options = benchmark.Options(**{**benchmark.QUICK, "families": ("contractive",), "encoders": ("B",),
                                 "paths": ("jacrev", "mlp")})
  rows = benchmark.run(options)
  json.loads(json.dumps(rows))  # Everything is plain JSON.
  device, *cases = rows
  assert {"device", "backend", "jax", "matmul_gflops"} <= set(device)
  assert [(r["family"], r.get("penalty_path")) for r in cases] == [
      ("undercomplete", None), ("contractive", "mlp"), ("contractive", "jacrev")]
  for row in cases:
    _check_case(row)
    assert row["batch_size"] == 16 and row["encoder"] == "B"
    assert row["model"] == "mlp 784-400(relu)-32(linear)"
  plain, *contractive = cases
  assert "step_time_ratio" not in plain
  for row in contractive:
    assert row["macs_per_example"] == plain["macs_per_example"]  # The penalty is not counted.
    assert row["step_time_ratio"] > 0 and row["memory_ratio"] > 0


def test_cases_follow_the_flags():
  options = benchmark.Options(families=("contractive",), batch_sizes=(128, 1024), encoders=("A",))
  groups = benchmark.build_cases(options)
  by_batch = {g[0].config.batch_size: [(c.family, c.penalty_path) for c in g] for g in groups}
  fast = [("undercomplete", None), ("contractive", "mlp"), ("contractive", "stochastic")]
  assert by_batch[128] == fast + [("contractive", "jacfwd"), ("contractive", "jacrev")]  # Naive: 128 only.
  assert by_batch[1024] == fast
  plain, mlp, _, jacfwd, _ = groups[0]
  assert (plain.config.widths, plain.config.latent_dim, plain.config.code_activation) == ((), 1000, "sigmoid")
  assert mlp.config.contractive_path == "mlp" and mlp.steps == plain.steps == 4096 // 128
  assert jacfwd.config.contractive_path == "jacfwd" and jacfwd.steps == options.naive_steps


def test_quick_conv_case_against_flax_and_same_model_plain_loops():
  options = benchmark.Options(**{**benchmark.QUICK, "families": ("undercomplete",), "architectures": ("conv",)})
  _, ours, flax, same = benchmark.run(options)
  for row in (ours, flax, same):
    _check_case(row)
    assert row["model"] == "conv 784-32(relu)-64(relu)-20(linear)"
    assert row["macs_per_example"] == ours["macs_per_example"]  # The useful multiply-adds, for all three.
  assert (flax["loop"], flax["plain_model"], same["plain_model"]) == ("plain", "flax", "ae_jax")
  assert ours["vs_plain"] > 0 and ours["vs_plain_same_model"] > 0 and "loop" not in ours


def test_conv_cases_follow_the_flags():
  options = benchmark.Options(families=("vae", "contractive"), architectures=("conv", "mlp"), batch_sizes=(128,))
  groups = benchmark.build_cases(options)
  conv = groups[0]
  assert [(c.family, c.plain, c.plain_model) for c in conv] == [
      ("vae", False, "flax"), ("vae", True, "flax"), ("vae", True, "ae_jax")]  # No conv contractive case.
  assert conv[0].config.architecture == "conv" and tuple(conv[0].config.widths) == (32, 64)
  assert all(c.steps == benchmark.CONV_STEPS // 128 for c in conv)
  assert [g[0].config.architecture for g in groups] == ["conv", "mlp", "mlp", "mlp"]  # vae, contractive A, B.


def test_main_prints_json_lines_and_writes_them_to_out(tmp_path, capsys):
  with flagsaver.flagsaver():  # In-process: the subprocess test below covers the script itself.
    argv = cli.parse_flags([SCRIPT, "--quick", "--family=vae", f"--out={tmp_path}/bench.jsonl"])
    benchmark.main(argv)
  lines = capsys.readouterr().out.splitlines()
  assert lines == open(tmp_path / "bench.jsonl").read().splitlines()
  device, vae, plain, plain_own = map(json.loads, lines)
  assert device["backend"] == "cpu"
  _check_case(vae)
  assert plain["loop"] == "plain" and plain["macs_per_example"] == vae["macs_per_example"]
  assert (plain["plain_model"], plain_own["plain_model"]) == ("flax", "ae_jax")
  assert vae["vs_plain"] > 0 and "vs_plain" not in plain  # ae_jax's loop against the hand-written one.
  assert vae["vs_plain_same_model"] > 0
  assert (vae["family"], vae["batch_size"]) == ("vae", 16)
  assert vae["model"] == "mlp 784-400(relu)-20(gaussian)"
  assert vae["macs_per_example"] == 784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784


def test_script_rejects_a_bad_family_in_one_line():
  out = subprocess.run([sys.executable, SCRIPT, "--family=vae,gan", "--batch_size=128"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "error: --family=gan is not one of: undercomplete, sparse, denoising, vae, contractive"]


def test_plain_flax_conv_model_is_ae_jax_model_in_flax_layers():
  import plain_loop  # pylint: disable=g-import-not-at-top  # experiments/ is on sys.path (conftest).
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ae_jax import families, models  # pylint: disable=g-import-not-at-top

  config = benchmark.family_config("vae", 4, **{**benchmark.CONV_SHAPE, "widths": (4, 8)})
  ours, flax = families.model_from_config(config, (8, 8, 1)), plain_loop.flax_model(config, (8, 8, 1))
  assert type(flax.encoder.trunk).__name__ == "FlaxConvEncoder" and type(flax.decoder).__name__ == "FlaxConvDecoder"
  params = models.init(ours, jax.random.key(0), (8, 8, 1))
  jax.tree.map(np.testing.assert_array_equal, params, models.init(flax, jax.random.key(0), (8, 8, 1)))
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               ours.apply({"params": params}, x), flax.apply({"params": params}, x))
