"""Issue 21 through the entry points: every fault ends in one stderr line (exit code 2, 3 or 1), never a
traceback, and the next identical command resumes the run."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from ae_jax import cli
from ae_jax import errors
from ae_jax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_CONFIG = "--config=experiments/configs/test.py"


def _env():
  return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))


def _run(script, *args, cwd=ROOT):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script), *args], cwd=cwd, env=_env(),
                        capture_output=True, text=True, timeout=300, check=False)


def _one_error_line(out, code=2) -> str:
  assert out.returncode == code, (out.returncode, out.stderr[-3000:])
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, out.stderr[-3000:]
  return lines[0]


def _clean(out):
  assert out.returncode == 0, out.stderr[-3000:]
  for bad in ("Traceback", "Event loop is closed"):
    assert bad not in out.stderr, out.stderr[-3000:]


def test_unusable_workdirs_are_refused_before_jax_loads(tmp_path):
  """Case 4: a workdir that is a file or under a file, in train, sweep and compare; train answers in < 1 s."""
  (tmp_path / "file").write_text("x")
  for script, extra in (("train.py", [TEST_CONFIG]), ("sweep.py", [TEST_CONFIG, "--seeds=2"]), ("compare.py", [])):
    for workdir, expected in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "run", "which is a file")):
      start = time.perf_counter()
      out = _run(script, *extra, f"--workdir={workdir}")
      took = time.perf_counter() - start
      assert expected in _one_error_line(out), out.stderr
      if script == "train.py":
        assert took < 3, took  # Python's start and absl's flags only (0.2 s on an idle machine).
  timed = subprocess.run([sys.executable, "-X", "importtime", os.path.join(ROOT, "experiments", "train.py"),
                          TEST_CONFIG, f"--workdir={tmp_path / 'file'}"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=60, check=False)
  assert timed.returncode == 2 and "is a file" in timed.stderr
  imported = {line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines() if line.startswith("import time")}
  assert "ae_jax.workdir" in imported and not imported & {"jax", "tensorflow"}, sorted(imported)


def test_read_only_and_full_disks_are_one_line(tmp_path, monkeypatch, capsys):
  """Case 4: not writable, too little space (before any work), and a disk that fills during the run."""
  monkeypatch.setattr(os, "access", lambda *a, **k: False)
  with pytest.raises(errors.ConfigError, match="not writable"):
    workdir_lib.check_usable(str(tmp_path / "run"))
  monkeypatch.undo()
  monkeypatch.setattr(workdir_lib.shutil, "disk_usage", lambda p: type("U", (), {"free": 2**20})())
  with pytest.raises(SystemExit) as exit_info:
    cli.check_workdir(str(tmp_path / "run"))
  assert exit_info.value.code == 2 and "1.0 MiB free" in capsys.readouterr().err
  monkeypatch.undo()
  with pytest.raises(SystemExit) as exit_info, cli.clear_errors():
    try:
      raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    except OSError as e:
      raise RuntimeError("orbax wrapped it") from e
  err = capsys.readouterr().err
  assert exit_info.value.code == cli.DISK_FULL_EXIT_CODE and err.count("\n") == 1
  assert "disk is full writing" in err and "run the same command again" in err


def test_a_damaged_checkpoint_resumes_with_one_warning_line(tmp_path):
  """Case 1: `rm -r w/checkpoints/40/*` (a finished run's report: test_faults_checkpoints.py)."""
  w = tmp_path / "w"
  args = [TEST_CONFIG, "--config.checkpoint_every=10", "--config.num_pictures=0", "--config.evaluate=quick",
          f"--workdir={w}"]
  _clean(_run("train.py", *args, "--config.num_steps=40"))
  for entry in os.listdir(w / "checkpoints" / "40"):
    path = w / "checkpoints" / "40" / entry
    subprocess.run(["rm", "-r", str(path)], check=True)
  out = _run("train.py", *args, "--config.num_steps=60")
  _clean(out)
  assert out.stderr.count("cannot be restored") == 1 and "checkpoints/40" in out.stderr
  assert "Metadata file does not exist" not in out.stderr
  assert sorted(os.listdir(w / "checkpoints"), key=int) == ["40", "50", "60"]


def test_a_second_run_in_a_workdir_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
  """Case 2: the same command twice at once; after kill -9 of the first, the command resumes."""
  w = tmp_path / "w"
  args = [TEST_CONFIG, "--config.num_steps=1000", "--config.checkpoint_every=50", "--config.num_pictures=0",
          "--config.evaluate=quick", f"--workdir={w}"]
  first = subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "train.py"), *args], cwd=ROOT,
                           env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 120
    while not os.path.exists(w / "checkpoints" / "50") and time.time() < deadline:
      time.sleep(0.2)
    second = _run("train.py", *args)
    assert f"is in use by another run (process {first.pid})" in _one_error_line(second)
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  out = _run("train.py", *args)  # The lock went with the process: the same command resumes.
  _clean(out)
  assert "Resumed" in out.stderr and "Final metrics (step 1000):" in out.stdout
  rows = workdir_lib.read_metrics(str(w))
  steps = [r["step"] for r in rows if "loss" in r]
  assert len(set(steps)) == len(steps) and steps[-1] == 1000  # No row written twice.


def test_sweep_faults(tmp_path):
  """Case 5: a member's data check fails before anything trains; all diverged exits 3; case 3: a torn
  status.json and a torn sweep.json resume the sweep, whose table carries every member's train_loss."""
  w = tmp_path / "w"
  out = _run("sweep.py", TEST_CONFIG, "--sweep=batch_size=32,5000", f"--workdir={w}")
  assert "batch_size=5000 exceeds" in _one_error_line(out)
  assert not os.path.exists(w / "batch_size=32" / "checkpoints")  # Nothing trained.
  args = [TEST_CONFIG, "--config.num_steps=20", "--config.num_pictures=0", "--config.evaluate=quick", "--seeds=2"]
  out = _run("sweep.py", *args, "--sweep=learning_rate=1e30", f"--workdir={tmp_path / 'diverged'}")
  assert "all 2 members diverged" in _one_error_line(out, code=3)
  _clean(_run("sweep.py", *args, f"--workdir={w}"))
  table = (w / "sweep.csv").read_text()
  (w / "seed=0" / "status.json").write_text("")  # `: > W/<member>/status.json`
  (w / "sweep.json").write_text('{"base": {"fam')
  out = _run("sweep.py", *args, f"--workdir={w}")
  _clean(out)
  assert (w / "sweep.csv").read_text() == table  # The same numbers: seed=0 re-evaluated, seed=1 re-reported.
  assert "nan" not in table.split("\n", 1)[1].split(",")[3:5]


def test_bad_user_terms_are_one_line_before_training(tmp_path):
  """Case 6: a term module that does not compile, a NaN term weight."""
  (tmp_path / "badterm.py").write_text("def f(x:\n  pass\n")
  config = os.path.join(ROOT, "experiments", "configs", "test.py")
  out = _run("train.py", f"--config={config}", "--config.extra_terms=badterm:f", f"--workdir={tmp_path}/w",
             cwd=tmp_path)
  assert "does not compile" in _one_error_line(out) and "badterm.py line 1" in out.stderr
  out = _run("train.py", f"--config={config}", "--config.extra_terms=badterm:f=nan", f"--workdir={tmp_path}/w",
             cwd=tmp_path)
  assert "must be a finite number" in _one_error_line(out)
  assert not os.path.exists(tmp_path / "w" / workdir_lib.METRICS)


def test_the_lock_is_an_os_lock_and_all_diverged_sweeps_exit_3(tmp_path, capsys):
  import fcntl  # pylint: disable=g-import-not-at-top

  workdir_lib.lock(str(tmp_path))
  workdir_lib.lock(str(tmp_path))  # Held by this process already: nothing to do.
  other = os.open(tmp_path / workdir_lib.LOCK, os.O_RDWR)  # Another open file: what another process holds.
  with pytest.raises(BlockingIOError):  # Not even shared: the holder's lock is exclusive.
    fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
  os.close(other)
  rows = [{"member": "a", "status": "diverged at step 3"}, {"member": "b", "status": "done"}]
  cli.exit_for_sweep({"rows": rows})  # Some diverged: the table says which, exit 0.
  with pytest.raises(SystemExit) as exit_info:
    cli.exit_for_sweep({"rows": rows[:1] * 2})
  assert exit_info.value.code == errors.NON_FINITE_EXIT_CODE
  assert capsys.readouterr().err.startswith("error: all 2 members diverged")


def test_a_dead_process_of_a_sweep_stops_the_other_in_one_line(tmp_path):
  """Case 5: kill -9 one of a 2-process sweep; the survivor's last words are one line, no traceback, and
  Gloo's connection notices stay out of its output."""
  from tests import test_distributed as dist  # pylint: disable=g-import-not-at-top

  procs = dist._two("sweep.py", [*dist.CONFIG, *dist.SWEEP, f"--workdir={tmp_path}"])  # pylint: disable=protected-access
  first = tmp_path / "seed=0" / "checkpoints" / "20"
  deadline = time.monotonic() + 120
  while not first.exists() and time.monotonic() < deadline and procs[1].poll() is None:
    time.sleep(0.02)
  assert first.exists(), dist._wait(procs)  # pylint: disable=protected-access
  os.kill(procs[1].pid, signal.SIGKILL)
  (rc0, out0, err0), _ = dist._wait(procs, timeout=60)  # pylint: disable=protected-access
  assert "[Gloo]" not in out0 and "Expected number of connected peer" not in out0, out0  # Its notices dropped.
  if not (tmp_path / "sweep.csv").exists():  # Process 0 had not finished alone.
    assert rc0 != 0 and "Traceback" not in err0, err0[-3000:]
    lines = [line for line in err0.splitlines() if line.startswith("error:")]
    fatal = [line for line in err0.splitlines() if line[:1] == "F" and line[1:5].isdigit()]  # JAX's runtime.
    assert (len(lines) == 1 and "lost another process" in lines[0]) or (fatal and not lines), err0[-3000:]


def test_a_benchmark_out_in_a_missing_folder_and_a_data_dir_naming_a_module(tmp_path, capsys):
  """Case 6: --out's folder is created (an unwritable path is one line, exit 2); a tfds data_dir whose
  features.json names a class outside tfds is refused before tfds could import its module."""
  import json  # pylint: disable=g-import-not-at-top

  from ae_jax import data  # pylint: disable=g-import-not-at-top
  from benchmarks import harness  # pylint: disable=g-import-not-at-top

  out = tmp_path / "missing" / "folder" / "rows.jsonl"
  with harness.json_lines(str(out)) as emit:
    emit({"a": 1})
  assert out.read_text() == '{"a": 1}\n'
  (tmp_path / "file").write_text("")
  with pytest.raises(SystemExit) as exit_info, harness.json_lines(str(tmp_path / "file" / "rows.jsonl")):
    pass
  assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: --out=")
  prepared = tmp_path / "tfds" / "mnist" / "3.0.1"
  prepared.mkdir(parents=True)
  (prepared / "features.json").write_text(json.dumps(
      {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
       "featuresDict": {"features": {"image": {"pythonClassName": "evil_module.Feature"}}}}))
  with pytest.raises(data.DataError, match="evil_module.Feature"):
    data.load("mnist", data_dir=str(tmp_path / "tfds"))
