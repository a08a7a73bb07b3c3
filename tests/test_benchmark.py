"""benchmarks/benchmark.py in --quick mode: it runs and reports every key; no speed is asserted. Its
runner times the program `program.build` assembles for training, and the harness's timer."""

import json
import math
import os
import subprocess
import sys

from absl.testing import flagsaver
import jax
import numpy as np
import pytest

from ae_jax import cli
from ae_jax import data
from ae_jax import families
from ae_jax import models
from benchmarks import benchmark
from benchmarks import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE_KEYS = {"family": str, "batch_size": int, "model": str, "examples_per_s": float, "steps_per_s": float,
             "step_time_s": float, "peak_fraction": float, "bound_examples_per_s": float, "macs_per_example": int,
             "matmul_gflops": float, "compile_s": float}


def _check_case(row):
  for key, kind in CASE_KEYS.items():
    assert isinstance(row[key], kind), (key, row)
    if kind is not str:
      assert math.isfinite(row[key]) and row[key] > 0, (key, row)
  assert math.isfinite(row["final_loss"]), row
  naive = row.get("penalty_path") in benchmark.NAIVE_PATHS
  assert (row["steps"], row["repeats"], row["members"]) == (1 if naive else 2, 1, 1), row
  if row.get("loop") != "plain":  # ae_jax's compiled chunk or step: XLA's memory analysis, less the dataset.
    assert isinstance(row["peak_memory_bytes"], int) and row["peak_memory_bytes"] > 0, row


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
  assert flax["plain_layout"] == "images" and "vs_plain_images" not in ours  # A conv model keeps its images.


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
    argv = cli.parse_flags(["benchmark", "--quick", "--family=vae", f"--out={tmp_path}/bench.jsonl"])
    benchmark.main(argv)
  lines = capsys.readouterr().out.splitlines()
  assert lines == open(tmp_path / "bench.jsonl").read().splitlines()
  device, vae, plain, plain_images, plain_own = map(json.loads, lines)
  assert device["backend"] == "cpu"
  _check_case(vae)
  assert vae["loop_form"] == "scan"  # config.loop=auto (feeds.resolve_loop).
  assert plain["loop"] == "plain" and plain["macs_per_example"] == vae["macs_per_example"]
  # The user's loop as Flax's example writes it (flattened at input) is `vs_plain`; image-shaped is a column.
  assert (plain["plain_layout"], plain_images["plain_layout"]) == ("flat", "images")
  assert plain["final_loss"] == pytest.approx(plain_images["final_loss"], rel=1e-5)  # The same training.
  assert (plain["plain_model"], plain_own["plain_model"]) == ("flax", "ae_jax")
  assert vae["vs_plain"] > 0 and "vs_plain" not in plain  # ae_jax's loop against the hand-written one.
  assert vae["vs_plain_images"] > 0 and vae["vs_plain_same_model"] > 0
  assert (vae["family"], vae["batch_size"]) == ("vae", 16)
  assert vae["model"] == "mlp 784-400(relu)-20(gaussian)"
  assert vae["macs_per_example"] == 784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784


def test_both_loop_forms_are_timed_and_train_alike():
  options = benchmark.Options(**{**benchmark.QUICK, "families": ("undercomplete",), "loops": ("scan", "step")})
  _, scan, step, *plain = benchmark.run(options)
  assert (scan["loop_form"], step["loop_form"], len(plain)) == ("scan", "step", 3)
  assert step["vs_scan"] > 0 and "vs_scan" not in scan
  assert scan["final_loss"] == step["final_loss"]  # The same steps, bitwise.
  for row in (scan, step):
    _check_case(row)
    assert row["vs_plain"] > 0


def test_script_rejects_a_bad_family_in_one_line():
  out = subprocess.run([sys.executable, "-m", "benchmarks.benchmark", "--family=vae,gan", "--batch_size=128"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [f"error: --family=gan is not one of: {', '.join(benchmark.FAMILIES)}"]
  # The registry's families, contractive (the slow groups) last.
  assert sorted(benchmark.FAMILIES) == sorted(families.NAMES) and benchmark.FAMILIES[-1] == "contractive"


def _random_dataset(n: int) -> data.Dataset:
  images, labels = harness.random_images(n), np.zeros(n, np.int32)
  return data.Dataset(images, labels, images[:0], labels[:0], "random")


def test_runner_assembles_the_run_as_training_does():
  # The old hand-made assembly built the optimizer without steps_per_epoch (the iwae schedule raised)
  # and left the decoder's output bias at zero.
  config = harness.family_config("vae", 16, widths=(8,), latent_dim=4, init_output_bias="data_mean",
                                 lr_schedule="iwae")
  dataset = _random_dataset(64)
  runner = benchmark.Runner(benchmark.Case(config, 2, members=2), dataset, warmup=False,
                            compiler_options=benchmark.FAST_COMPILE)
  np.testing.assert_array_equal(runner.hp["seed"], [0, 1])  # Members seed, seed + 1.
  bias = np.asarray(runner.state.params["decoder"]["logits"]["bias"])
  for member in bias:
    np.testing.assert_allclose(member, models.data_mean_logits(dataset.train_images).reshape(-1), rtol=1e-6)
  program = runner.program
  assert runner() > 0 and math.isfinite(runner.loss)
  # The timed call is training's: the feed's chunk from the program's initial state, the same loss.
  _, metrics = program.feed.run(program.init_state(), program.hp, 0, 2)
  assert float(np.mean(jax.device_get(metrics["loss"])[-1])) == pytest.approx(runner.loss, rel=1e-5)


def test_round_robin_alternates_direction_and_retimes_the_matmul_each_round():
  calls, peaks = [], iter(range(100))

  def timer(name):
    return lambda: calls.append(name) or float(len(calls))

  rounds = harness.round_robin([timer("a"), timer("b")], 3, matmul=lambda: float(next(peaks)))
  assert calls == ["a", "b", "b", "a", "a", "b"]
  assert rounds.seconds == [[1.0, 4.0, 5.0], [2.0, 3.0, 6.0]]
  assert rounds.peaks == [1.0, 4.0, 7.0]  # The median of 3 fresh matmul timings before each round.
  assert harness.median_ratio([1.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_positive_ints_parses_a_list_flag_or_exits_2_in_one_line(capsys):
  assert harness.positive_ints("batch_size", ["128", "1024"]) == [128, 1024]
  for bad in (["a"], ["0"], [], ["16", "-1"]):
    with pytest.raises(SystemExit) as e:
      harness.positive_ints("batch_size", bad)
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --batch_size={','.join(bad)} must be a comma-separated list of positive integers\n")


def test_plain_flax_conv_model_is_ae_jax_model_in_flax_layers():
  from benchmarks import plain_loop  # pylint: disable=g-import-not-at-top

  config = harness.family_config("vae", 4, **{**benchmark.CONV_SHAPE, "widths": (4, 8)})
  ours, flax = families.model_from_config(config, (8, 8, 1)), plain_loop.flax_model(config, (8, 8, 1))
  assert type(flax.encoder.trunk).__name__ == "FlaxConvEncoder" and type(flax.decoder).__name__ == "FlaxConvDecoder"
  params = models.init(ours, jax.random.key(0), (8, 8, 1))
  jax.tree.map(np.testing.assert_array_equal, params, models.init(flax, jax.random.key(0), (8, 8, 1)))
  x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               ours.apply({"params": params}, x), flax.apply({"params": params}, x))
