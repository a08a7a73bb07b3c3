"""Successive halving inside a sweep: rungs, ranking on validation, survivors equal single runs, resume."""

import json
import math
import os

import jax
import numpy as np
import pytest

from ae_jax import search
from ae_jax import sweep
from ae_jax import sweep_spec
from ae_jax import train
from ae_jax import workdir as workdir_lib
from tests.conftest import family_config

RATES = (3e-3, 1e-4, 1e-5)  # Three settings: with eta 3, one goes on after the first rung.


def test_rungs_and_their_budgets():
  assert [search.default_rungs(n, 3) for n in (1, 2, 3, 4, 9, 10, 27)] == [1, 2, 2, 3, 3, 4, 4]
  assert search.rung_steps(90, eta=3, rungs=3) == [10, 30, 90]
  assert search.rung_steps(40, eta=3, rungs=2) == [13, 40]
  assert search.rung_steps(7, eta=2, rungs=1) == [7]
  with pytest.raises(sweep_spec.SweepError, match="distinct step budgets"):
    search.rung_steps(4, eta=3, rungs=3)  # [0->1, 1, 4]: two rungs at one step.
  with pytest.raises(sweep_spec.SweepError, match="--eta=1"):
    search.rung_steps(40, eta=1, rungs=2)


def test_ranking_averages_seeds_puts_non_finite_last_and_breaks_ties_by_order():
  settings = ["a", "a", "b", "b", "c", "c"]
  assert search.survivors(settings, [1.0, 5.0, 2.0, 2.0, 0.5, math.nan], eta=3) == {"b"}  # a: 3, b: 2, c: inf.
  assert search.survivors(settings, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], eta=3) == {"a"}
  assert search.survivors(["a", "b", "c", "d"], [4.0, 3.0, 2.0, 1.0], eta=2) == {"c", "d"}
  assert search.survivors(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0], eta=3) == {"a", "b"}  # ceil(4 / 3).
  assert search.setting({"learning_rate": 0.1, "seed": 3}) == search.setting({"seed": 0, "learning_rate": 0.1})
  assert search._score({"loss_rec": 2.0, "loss_kl": 0.5, "loss": 2.1}, "negative_elbo") == 2.5  # pylint: disable=protected-access
  assert search._score({"loss_rec": 2.0, "loss_kl": 0.5, "loss": 2.1}, "loss") == 2.1  # pylint: disable=protected-access


@pytest.mark.parametrize("select,metric", [(None, "loss"), ("val_loss", "loss"), ("loss_rec", "loss_rec"),
                                           ("negative_elbo", "negative_elbo"),
                                           ("test_loss_kl", "loss_kl")])
def test_the_rung_metric_is_a_validation_loss_term(select, metric):
  assert search.rung_metric(select) == metric


@pytest.mark.parametrize("select", ["mse", "max:loss"])
def test_end_of_run_metrics_cannot_rank_rungs(select):
  with pytest.raises(sweep_spec.SweepError, match="halving ranks on a validation loss term"):
    search.rung_metric(select)


def _config(**overrides):
  config = family_config("undercomplete")
  config.update({"num_steps": 40, "log_every": 10, "eval_every": 20, "checkpoint_every": 20, "evaluate": "quick",
                 "num_pictures": 0, **overrides})
  return config


def _params_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("devices", [1, 4])
def test_halving_keeps_the_best_setting_which_equals_its_single_run(devices, tmp_path):
  members = [{"learning_rate": lr} for lr in RATES]
  out = sweep.run(_config(), members, str(tmp_path / "sweep"), search="halving", devices=jax.devices()[:devices])
  results = out["results"]
  assert [r.status for r in results] == ["done", "stopped", "stopped"]  # The fastest rate wins at step 13.
  assert [r.rung for r in results[1:]] == [0, 0] and [r.step for r in results] == [40, 13, 13]
  assert [row["status"] for row in out["rows"][1:]] == ["stopped at rung 0 (step 13)"] * 2
  assert [row["fate"] for row in out["rows"]] == ["finished"] + ["stopped at rung 0 (step 13)"] * 2
  record = workdir_lib.read_search(str(tmp_path / "sweep"))
  assert record["rung_steps"] == [13, 40] and record["decisions"][0]["kept"] == [out["names"][0]]
  with open(out["paths"]["search"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  scores = record["decisions"][0]["scores"]
  assert scores[out["names"][0]] < min(scores[n] for n in out["names"][1:])
  # The stopped members keep their checkpoint at the rung.
  assert os.path.isdir(tmp_path / "sweep" / out["names"][1] / "checkpoints" / "13")
  # The survivor is the single run with its values (and the validation split halving carved).
  single = train.train_and_evaluate(_config(learning_rate=RATES[0], validation_fraction=0.1), str(tmp_path / "one"))
  _params_close(results[0].params, single.params)
  assert results[0].eval_validation and results[0].test["loss"] == pytest.approx(single.test["loss"], rel=1e-4)


def test_kill_9_during_a_search_and_the_same_command_again_ends_identically(tmp_path):
  # A real SIGKILL of `sweep.py --search=halving` after its first rung was decided, while the survivor trains
  # on; the same command then resumes from the recorded decision and ends as an uninterrupted search does.
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  from tests import test_distributed as dist  # pylint: disable=g-import-not-at-top  # Its launcher.

  args = ["--config=experiments/configs/test.py", "--config.num_steps=1500", "--config.log_every=10",
          "--config.eval_every=20", "--config.checkpoint_every=20", "--config.evaluate=quick",
          "--config.num_pictures=0", "--config.validation_fraction=0.1", "--search=halving",
          f"--sweep=learning_rate={','.join(map(str, RATES))}"]
  killed, whole = tmp_path / "killed", tmp_path / "whole"
  proc = dist._launch("sweep.py", [*args, f"--workdir={killed}"], devices=4)  # pylint: disable=protected-access
  reference = dist._launch("sweep.py", [*args, f"--workdir={whole}"], devices=4)  # pylint: disable=protected-access
  deadline = time.time() + 180
  survivor = None
  while time.time() < deadline and proc.poll() is None:
    record = workdir_lib.read_search(str(killed)) if (killed / workdir_lib.SEARCH).exists() else None
    if record and record.get("decisions"):
      survivor = killed / record["decisions"][0]["kept"][0] / "checkpoints"
      if survivor.exists() and any(p.name.isdigit() and int(p.name) > record["rung_steps"][0]
                                   for p in survivor.iterdir()):
        break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  dist._wait([proc])  # pylint: disable=protected-access
  assert survivor is not None and not (killed / "sweep.csv").exists(), "the search ended before it was killed"
  again = subprocess.run([sys.executable, os.path.join(dist.ROOT, "experiments", "sweep.py"), *args,
                          f"--workdir={killed}"], cwd=dist.ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu",
                              "PYTHONPATH": dist.ROOT})
  assert again.returncode == 0, again.stderr[-3000:]
  dist._ok(dist._wait([reference]))  # pylint: disable=protected-access
  a, b = workdir_lib.read_search(str(killed)), workdir_lib.read_search(str(whole))
  assert a["decisions"] == b["decisions"]  # The same rung decision, recorded once and replayed.
  name = a["decisions"][0]["kept"][0]
  rows = [[r for r in workdir_lib.read_metrics(str(d / name)) if "test_loss" in r] for d in (killed, whole)]
  assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] and rows[0][-1]["step"] == 1500
  assert rows[0][-1]["test_loss"] == pytest.approx(rows[1][-1]["test_loss"], rel=1e-5)


def test_a_diverging_member_drops_out_at_once(tmp_path):
  members = [{"learning_rate": lr} for lr in (1e30, 3e-3, 1e-4)]
  out = sweep.run(_config(), members, str(tmp_path), search="halving")
  assert [r.status for r in out["results"]] == ["diverged", "done", "stopped"]


def test_bad_searches_are_one_line(tmp_path):
  with pytest.raises(sweep_spec.SweepError, match="distinct step budgets"):
    sweep.run(_config(num_steps=2, log_every=1, eval_every=1, checkpoint_every=1),
              [{"learning_rate": lr} for lr in RATES], str(tmp_path / "a"), search="halving", rungs=3)
  with pytest.raises(sweep_spec.SweepError, match="one structure"):
    sweep.run(_config(), [{"latent_dim": 2}, {"latent_dim": 3}], str(tmp_path / "b"), search="halving")
  with pytest.raises(sweep_spec.SweepError, match="--search='random'"):
    sweep.run(_config(), [{"seed": 0}], str(tmp_path / "c"), search="random")


def test_two_processes_decide_as_one_process_with_four_devices(tmp_path):
  # The same halving from the command line as 2 processes x 2 devices, and in this process (1 x 4).
  from tests import test_distributed as dist  # pylint: disable=g-import-not-at-top  # Its launcher.

  args = ["--config=experiments/configs/test.py", "--config.num_steps=40", "--config.evaluate=quick",
          "--config.num_pictures=0", "--search=halving", "--sweep=learning_rate=3e-3,1e-4,1e-5",
          f"--workdir={tmp_path / 'two'}"]
  port = dist._free_port()  # pylint: disable=protected-access
  procs = [dist._launch("sweep.py", args, devices=2, process_id=i, port=port) for i in range(2)]  # pylint: disable=protected-access
  outs = dist._wait(procs)  # pylint: disable=protected-access
  assert all(code == 0 for code, _, _ in outs), outs[0][2][-2000:] + outs[1][2][-2000:]
  import configs  # pylint: disable=g-import-not-at-top

  config = configs.get("test", num_steps=40, evaluate="quick", num_pictures=0)
  one = sweep.run(config, [{"learning_rate": lr} for lr in (3e-3, 1e-4, 1e-5)], str(tmp_path / "one"),
                  search="halving")
  two_record, one_record = (workdir_lib.read_search(str(tmp_path / d)) for d in ("two", "one"))
  assert two_record["decisions"][0]["kept"] == one_record["decisions"][0]["kept"] == [one["names"][0]]
  for name, score in one_record["decisions"][0]["scores"].items():
    assert two_record["decisions"][0]["scores"][name] == pytest.approx(score, rel=1e-5)
  survivor = one["names"][0]
  evaluated = [json.load(open(tmp_path / d / survivor / "eval.json", encoding="utf-8")) for d in ("two", "one")]
  assert evaluated[0]["mse"] == pytest.approx(evaluated[1]["mse"], rel=1e-4)
  stopped = json.load(open(tmp_path / "two" / one["names"][1] / "status.json", encoding="utf-8"))
  assert (stopped["status"], stopped["rung"], stopped["step"]) == ("stopped", 0, 13)


@pytest.mark.parametrize("args,match", [
    (["--search=halving", "--eta=1", "--sweep=learning_rate=1e-3,1e-2"], "--eta"),
    (["--search=halving", "--sweep=latent_dim=2,3"], "one structure"),
    (["--search=halving", "--rungs=5", "--config.num_steps=3", "--sweep=learning_rate=1e-3,1e-2"],
     "distinct step budgets"),
])
def test_bad_search_flags_are_one_line_and_exit_2(args, match, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, os.path.join(root, "experiments", "sweep.py"),
                        "--config=experiments/configs/test.py", *args, f"--workdir={tmp_path}"],
                       cwd=root, capture_output=True, text=True, timeout=300, check=False)
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert out.returncode == 2 and len(errors) == 1 and match in errors[0], out.stderr[-2000:]


@pytest.mark.parametrize("family,kind,overrides", [
    ("sparse", "pbt", {"sparsity": "topk", "code_activation": "linear", "topk": 4, "auxk": 4}),  # TopK's counters.
    ("denoising", "halving", {}),
    ("contractive", "halving", {}),
    ("vae", "pbt", {"kl_target": 2.0}),  # A set point's controller state is copied with its member.
])
def test_every_family_searches(family, kind, overrides, tmp_path):
  # Undercomplete (above) and the VAE (tests/test_pbt.py) search in the other tests; each family's loss terms,
  # state and evaluation go through a rung or an exploit the same way (halving and PBT share the member code).
  config = family_config(family)
  config.update({"num_steps": 12, "log_every": 3, "eval_every": 3, "checkpoint_every": 12, "evaluate": "quick",
                 "num_pictures": 0, "validation_fraction": 0.1, **overrides})
  members = [{"learning_rate": lr} for lr in (3e-3, 1e-3, 3e-4, 1e-4)]
  extra = {"eta": 2} if kind == "halving" else {"pbt_interval": 3, "pbt_quantile": 0.25}
  out = sweep.run(config, members, str(tmp_path), search=kind, **extra)
  statuses = [r.status for r in out["results"]]
  assert statuses.count("done") == (1 if kind == "halving" else 4), statuses
  record = workdir_lib.read_search(str(tmp_path))
  assert record["decisions" if kind == "halving" else "exploits"]
  assert os.path.exists(out["paths"]["search"])
