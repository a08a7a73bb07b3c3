"""Issue 21, cases 1 and 3 in process: damaged checkpoints and torn record files never lose a run.

Each case damages a finished or stopped run, resumes it, and checks that the result is the
uninterrupted run's (the parameters to float precision) and that the damage was named in one line.
"""

import json
import os
import shutil

import numpy as np
import pytest

from ae_jax import checkpoints
from ae_jax import cli
from ae_jax import train
from ae_jax import workdir as workdir_lib
from tests import test_checkpoints as checkpoints_test


def _config(num_steps, **overrides):
  return checkpoints_test._config(num_steps, evaluate="quick", checkpoint_every=10, **overrides)


_same_params = checkpoints_test._assert_same_params  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  return train.train_and_evaluate(_config(40), str(tmp_path_factory.mktemp("full")))


def _warnings(caplog, text):
  return [r for r in caplog.records if r.levelname == "WARNING" and text in r.getMessage()]


def test_damaged_newest_checkpoints_fall_back_and_are_saved_again(uninterrupted, tmp_path, caplog):
  """rm -r checkpoints/40/*, and flipped arrays in 30 (its checksum no longer matches): resumes from 20."""
  train.train_and_evaluate(_config(40), str(tmp_path))  # Checkpoints 20, 30, 40 (the newest 3 kept).
  ckpt = tmp_path / "checkpoints"
  for entry in os.listdir(ckpt / "40"):
    shutil.rmtree(ckpt / "40" / entry) if os.path.isdir(ckpt / "40" / entry) else os.remove(ckpt / "40" / entry)
  # A checkpoint whose arrays are not those it was saved with: step 20's checksum in step 30's folder.
  shutil.copy(ckpt / "20" / checkpoints.CHECKSUM, ckpt / "30" / checkpoints.CHECKSUM)
  (tmp_path / workdir_lib.STATUS).unlink()  # Interrupted before it finished.
  caplog.set_level("WARNING")
  result = train.train_and_evaluate(_config(40), str(tmp_path))
  named = _warnings(caplog, "cannot be restored")
  assert [os.path.basename(r.args[0]) for r in named] == ["40", "30"], caplog.text
  assert "do not match the checksum" in named[1].getMessage()
  assert not [r for r in caplog.records if "orbax" in r.pathname and r.levelname == "WARNING"], caplog.text
  assert [row["step"] for row in result.history] == [30, 40]  # Retrained from step 20.
  _same_params(result.params, uninterrupted.params)
  assert sorted(os.listdir(ckpt)) == ["20", "30", "40"]  # The damaged ones saved again, and good:
  caplog.clear()
  (tmp_path / workdir_lib.STATUS).unlink()
  again = train.train_and_evaluate(_config(40), str(tmp_path))
  assert not _warnings(caplog, "cannot be restored") and again.history == []
  _same_params(again.params, uninterrupted.params)


def test_every_checkpoint_damaged_starts_over_and_says_so(uninterrupted, tmp_path, caplog):
  train.train_and_evaluate(_config(40), str(tmp_path))
  for step in ("20", "30", "40"):
    shutil.rmtree(tmp_path / "checkpoints" / step / checkpoints.ITEM)
  (tmp_path / workdir_lib.STATUS).unlink()
  caplog.set_level("WARNING")
  result = train.train_and_evaluate(_config(40), str(tmp_path))
  assert len(_warnings(caplog, "cannot be restored")) == 3
  assert _warnings(caplog, "training starts again from step 0")
  _same_params(result.params, uninterrupted.params)
  rows = workdir_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows if "loss" in r] == [10, 20, 30, 40]  # Logged once each.


def test_last_good_is_the_verified_checkpoint(tmp_path):
  """Flipped arrays (a checksum mismatch) are not "the last good checkpoint" a divergence message names."""
  state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.array(0, np.int32)}
  saver = checkpoints.Checkpointer(str(tmp_path))
  for step in (10, 20):
    saver.save(step, {**state, "step": np.array(step, np.int32)})
  assert saver.last_good() == 20
  saver.close()
  with open(tmp_path / "20" / checkpoints.CHECKSUM, "w", encoding="utf-8") as f:
    json.dump(checkpoints.checksum({**state, "w": state["w"] + 1, "step": np.array(20, np.int32)}), f)
  loader = checkpoints.Checkpointer(str(tmp_path))
  restored = loader.restore_latest(state)
  assert int(restored["step"]) == 10 and loader.last_good() == 10 and loader.latest_step() == 10
  loader.save(20, {**state, "step": np.array(20, np.int32)})  # The damaged one is replaced by the next save.
  assert int(checkpoints.Checkpointer(str(tmp_path)).restore_latest(state)["step"]) == 20


def test_torn_records_are_dropped_or_rederived_and_the_run_resumes(uninterrupted, tmp_path, caplog):
  """A torn last metrics row and a torn run_config.json (a kill mid-write by an older version)."""
  train.train_and_evaluate(_config(30), str(tmp_path))
  with open(tmp_path / workdir_lib.METRICS, "a", encoding="utf-8") as f:
    f.write('{"step": 9')
  with open(tmp_path / workdir_lib.CONFIG, "w", encoding="utf-8") as f:
    f.write('{"family": "den')
  caplog.set_level("WARNING")
  assert [r["step"] for r in workdir_lib.read_metrics(str(tmp_path))][-1] == 30
  assert len(_warnings(caplog, "which is torn")) == 1  # (tmp_path itself holds "torn")
  result = train.train_and_evaluate(_config(40), str(tmp_path))
  _same_params(result.params, uninterrupted.params)
  rows = workdir_lib.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows if "loss" in r] == [10, 20, 30, 40]
  assert json.loads((tmp_path / workdir_lib.CONFIG).read_text())["num_steps"] == 40  # Written again, whole.


def test_a_torn_status_or_eval_resumes_the_member_at_its_last_step(uninterrupted, tmp_path, capsys):
  train.train_and_evaluate(_config(40), str(tmp_path))
  config = _config(40)
  assert workdir_lib.read_finished(str(tmp_path), config) is not None
  for name in (workdir_lib.EVAL, workdir_lib.STATUS):  # Torn one by one: `: > status.json`.
    (tmp_path / name).write_text("")
    assert workdir_lib.read_finished(str(tmp_path), config) is None  # Unfinished: it resumes.
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result.history == [] and result.step == 40
  assert result.train["loss"] == pytest.approx(uninterrupted.train["loss"], rel=1e-6)  # From metrics.jsonl.
  assert result.eval == pytest.approx(uninterrupted.eval, rel=1e-5, nan_ok=True)
  cli.report(result, str(tmp_path))  # Case 4: a rerun of a finished run reports its real final metrics.
  printed = capsys.readouterr().out
  assert "Final metrics (step 40):" in printed and "train loss " in printed, printed
  finished = workdir_lib.read_finished(str(tmp_path), config)
  assert finished is not None and finished.train["loss"] == pytest.approx(uninterrupted.train["loss"], rel=1e-6)


def test_writes_are_atomic_and_overwrite_clears_the_whole_run(tmp_path, monkeypatch):
  workdir_lib.write_text(str(tmp_path / "a.json"), "old")

  def torn(*args, **kwargs):
    raise OSError(28, "No space left on device")  # The disk fills before the rename.

  monkeypatch.setattr(os, "replace", torn)
  with pytest.raises(OSError):
    workdir_lib.write_text(str(tmp_path / "a.json"), "new")
  monkeypatch.undo()
  assert (tmp_path / "a.json").read_text() == "old" and os.listdir(tmp_path) == ["a.json"]  # No temp left.
  run = tmp_path / "run"
  train.train_and_evaluate(_config(10, num_pictures=2), str(run))
  assert any(n.startswith(workdir_lib.TENSORBOARD_PREFIX) for n in os.listdir(run))
  assert any(n.endswith(".png") for n in os.listdir(run))
  workdir_lib.clear_run(str(run))
  assert os.listdir(run) == []
