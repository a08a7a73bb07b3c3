"""Sweeps: members equal their single runs, divergence is per member, resume, extension and refusal."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ae_jax import config as config_lib
from ae_jax import families
from ae_jax import sweep
from ae_jax import train
from ae_jax import workdir as workdir_lib
from tests.conftest import family_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Two seeds x two values of each family's own hyperparameter: init, data order and noise per member.
SWEPT = {"undercomplete": ("learning_rate", (1e-3, 3e-3)), "sparse": ("sparsity_weight", (1e-3, 1e-1)),
         "denoising": ("noise_level", (0.1, 0.4)), "contractive": ("contractive_weight", (0.1, 1.0)),
         "vae": ("beta", (0.5, 2.0)), "sparse_topk": ("auxk_weight", (0.0, 0.1))}
# TopK: its counters of examples since each unit fired live in the train state (dead after 3 batches).
VARIANTS = {"sparse_topk": ("sparse", {"sparsity": "topk", "code_activation": "linear", "topk": 2, "auxk": 4,
                                      "dead_after": 96})}


def _config(family, **overrides):
  family, variant = VARIANTS.get(family, (family, {}))
  config = family_config(family)
  config.update(variant)
  # SGD: Adam divides by sqrt(v), which turns reduction-order rounding into whole learning-rate steps.
  config.update({"num_steps": 20, "num_pictures": 0, "optimizer": "sgd", "learning_rate": 1e-3, **overrides})
  return config


def _members(family):
  key, values = SWEPT[family]
  return [{key: v, "seed": s} for v in values for s in (0, 1)]


def _assert_close(a, b, rtol=2e-4, atol=2e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("family", families.NAMES + tuple(VARIANTS))
def test_members_equal_single_runs_on_one_and_four_devices(family, tmp_path):
  base = _config(family)
  singles = []
  for i, member in enumerate(_members(family)):
    config = _config(family, **member)
    singles.append(train.train_and_evaluate(config, str(tmp_path / f"single{i}")))
  for devices in (1, 4):
    out = sweep.run(base, _members(family), str(tmp_path / f"sweep{devices}"), devices=jax.devices()[:devices])
    for single, result in zip(singles, out["results"]):
      assert result.status == "done"
      _assert_close(result.params, single.params)
      assert result.test["loss"] == pytest.approx(single.test["loss"], rel=1e-4)
      assert result.eval["mse"] == pytest.approx(single.eval["mse"], rel=1e-3)
      # The last logged training metrics, every one (TopK's dead fractions are counted on the global batch).
      assert result.train.keys() == single.train.keys() and {"loss", "loss_rec", "grad_norm"} <= result.train.keys()
      assert result.train == pytest.approx(single.train, rel=1e-3, abs=1e-6)
      if family == "sparse_topk":
        assert {"batch_dead_fraction", "dead_fraction_window"} <= result.train.keys()
        for key in ("batch_dead_fraction", "dead_fraction_window"):
          assert result.train[key] == single.train[key]


def test_a_diverging_member_is_marked_and_the_others_finish(tmp_path):
  base = _config("undercomplete", optimizer="adam")
  out = sweep.run(base, [{"learning_rate": 1e-3}, {"learning_rate": 1e30}], str(tmp_path))
  good, bad = out["results"]
  assert good.status == "done" and good.eval
  assert bad.status == "diverged" and 1 <= bad.diverged_at <= 20
  assert "non-finite" in bad.message and "learning_rate" in bad.message
  assert out["rows"][1]["status"] == f"diverged at step {bad.diverged_at}"
  # Each member's row holds its own result: the good one's losses and evaluation, the learning rate it ran.
  row = out["rows"][0]
  assert (row["status"], row["learning_rate"]) == ("done", 1e-3)
  assert (row["train_loss"], row["test_loss"], row["mse"]) == (good.train["loss"], good.test["loss"], good.eval["mse"])
  assert row["train_loss"] != row["test_loss"]
  status = json.load(open(tmp_path / out["names"][1] / "status.json"))
  assert status["status"] == "diverged" and status["diverged_at"] == bad.diverged_at
  # The diverged member's logged rows all precede its divergence; its checkpoints are good ones.
  rows = [json.loads(line) for line in open(tmp_path / out["names"][1] / "metrics.jsonl")]
  assert all(r["step"] < bad.diverged_at for r in rows)


def test_single_run_divergence_names_the_step_and_the_last_good_checkpoint(tmp_path):
  config = _config("undercomplete", optimizer="adam", learning_rate=1e30, checkpoint_every=10)
  with pytest.raises(train.TrainingError,
                     match=r"non-finite at step \d+ \(non-finite: .*loss.*no checkpoint was saved"):
    train.train_and_evaluate(config, str(tmp_path))


def test_interrupted_sweep_resumes_and_a_finished_one_is_reported_without_training(tmp_path, monkeypatch):
  base, members = _config("denoising"), _members("denoising")
  full = sweep.run(base, members, str(tmp_path / "full"))
  # "Killed" after step 10: the members' checkpoints at 10 are what a killed sweep leaves behind.
  sweep.run(_config("denoising", num_steps=10, checkpoint_every=10), members, str(tmp_path / "cut"))
  for name in full["names"]:
    os.remove(tmp_path / "cut" / name / "status.json")
  resumed = sweep.run(base, members, str(tmp_path / "cut"))
  for a, b in zip(full["results"], resumed["results"]):
    assert [row["step"] for row in b.history] == [20]  # Only the remaining steps ran.
    _assert_close(a.params, b.params, rtol=1e-6, atol=1e-7)

  def no_training(*args, **kwargs):
    raise AssertionError("a finished sweep must not train again")

  monkeypatch.setattr(train, "train_members", no_training)
  again = sweep.run(base, members, str(tmp_path / "full"))
  assert [r["test_loss"] for r in again["rows"]] == pytest.approx([r["test_loss"] for r in full["rows"]])
  assert [r["mse"] for r in again["rows"]] == pytest.approx([r["mse"] for r in full["rows"]])


def test_extending_a_sweep_trains_only_the_new_members(tmp_path, monkeypatch):
  base = _config("vae")
  sweep.run(base, [{"beta": 1.0}], str(tmp_path))
  trained = []
  real = train.train_members

  def recording(members, ds, devices=None):
    trained.extend(m.workdir for m in members)
    return real(members, ds, devices=devices)

  monkeypatch.setattr(train, "train_members", recording)
  out = sweep.run(base, [{"beta": 1.0}, {"beta": 4.0}], str(tmp_path))
  assert trained == [str(tmp_path / "beta=4")]
  assert [r["status"] for r in out["rows"]] == ["done", "done"]
  for path in ("sweep.md", "sweep.csv", "sweep.png", "beta=1/eval.json", "beta=4/metrics.jsonl"):
    assert os.path.exists(tmp_path / path), path


def test_a_sweep_of_another_base_config_is_refused_unless_overwrite(tmp_path):
  sweep.run(_config("undercomplete"), [{"seed": 0}], str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match="different base config.*latent_dim.*--overwrite"):
    sweep.run(_config("undercomplete", latent_dim=3), [{"seed": 0}], str(tmp_path))
  out = sweep.run(_config("undercomplete", latent_dim=3), [{"seed": 0}], str(tmp_path), overwrite=True)
  assert out["results"][0].status == "done" and len(out["results"][0].history) == 2


def test_structure_keys_may_be_swept_groups_run_one_after_another(tmp_path):
  out = sweep.run(_config("undercomplete"), [{"latent_dim": 2}, {"latent_dim": 3}], str(tmp_path))
  assert [r.params["encoder"]["code"]["kernel"].shape[1] for r in out["results"]] == [2, 3]


def _cli(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "sweep.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("args,match", [
    (["--sweep=bta=1,2"], "beta"),  # Unknown key, with the closest one.
    (["--sweep=beta="], "no values for beta"),
    (["--sweep=beta=big,2"], "beta"),
    (["--sweep=seed=1,2", "--seeds=2"], "seed"),
    ([], "nothing to sweep"),
])
def test_bad_sweep_input_is_one_line_and_exit_code_2(args, match, tmp_path):
  out = _cli("--config=experiments/configs/vae.py", f"--workdir={tmp_path}", *args)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], out.stderr
  assert not os.listdir(tmp_path)


def test_sweep_cli_trains_and_prints_the_table(tmp_path):
  out = _cli("--config=experiments/configs/test.py", "--config.num_steps=10", "--config.num_pictures=0",
             "--sweep=latent_dim=2,3", "--seeds=2", f"--workdir={tmp_path}", "--select=test_loss")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Best by test_loss on the test split" in out.stdout and "mean ± std over seeds" in out.stdout
  with open(tmp_path / "sweep.csv", encoding="utf-8") as f:
    header, *rows = f.read().splitlines()
  assert header.startswith("member,latent_dim,seed,status,train_loss,test_loss") and len(rows) == 4


def test_kill_9_and_the_same_command_again_resumes_the_whole_sweep(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  args = ["--config=experiments/configs/test.py", "--config.family=denoising", "--config.num_steps=400",
          "--config.num_pictures=0", "--config.checkpoint_every=10", "--sweep=noise_level=0.1,0.4"]
  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "sweep.py"), *args,
                           f"--workdir={killed}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = killed / "noise_level=0.4" / "checkpoints"
  deadline = time.time() + 120
  while time.time() < deadline and not (checkpoints.exists() and any(p.name != "tmp" for p in checkpoints.iterdir())):
    time.sleep(0.2)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed / "sweep.csv").exists(), "the sweep finished before it could be killed"
  resumed = _cli(*args, f"--workdir={killed}")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  whole = _cli(*args, f"--workdir={tmp_path / 'whole'}")
  assert whole.returncode == 0, whole.stderr[-3000:]
  for name in ("noise_level=0.1", "noise_level=0.4"):
    rows = [[json.loads(line) for line in open(d / name / "metrics.jsonl")] for d in (killed, tmp_path / "whole")]
    assert [r["step"] for r in rows[0] if "loss" in r] == [r["step"] for r in rows[1] if "loss" in r]
    assert rows[0][-1]["eval/mse"] == pytest.approx(rows[1][-1]["eval/mse"], rel=1e-5)


def test_a_member_trained_in_epochs_is_finished_until_its_epochs_are_raised(tmp_path):
  # status.json holds the resolved step count; with num_epochs the config's num_steps is not it.
  config = family_config("undercomplete")
  config.update({"num_epochs": 2, "num_steps": 7})
  resolved = config_lib.resolved(config, 320)  # 10 steps per epoch at batch 32.
  with open(tmp_path / "run_config.json", "w", encoding="utf-8") as f:
    json.dump(resolved.to_dict(), f, default=str)
  with open(tmp_path / "status.json", "w", encoding="utf-8") as f:
    json.dump({"status": "done", "step": 20, "message": "", "num_epochs": 2}, f)
  assert workdir_lib.read_finished(str(tmp_path), config).step == 20
  config.num_epochs = 3
  assert workdir_lib.read_finished(str(tmp_path), config) is None
