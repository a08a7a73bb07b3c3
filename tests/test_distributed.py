"""Several processes (jax.distributed): 2 processes x 2 CPU devices train what 1 process x 4 does.

Every test launches the entry points as separate processes on 127.0.0.1 (JAX's CPU collectives,
gloo), as a user would on several hosts, and compares the files they write with a one-process run.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Long enough to kill the processes between checkpoints; evaluation without pictures keeps it quick.
CONFIG = ["--config=experiments/configs/test.py", "--config.num_steps=60", "--config.checkpoint_every=20",
          "--config.num_pictures=0", "--config.optimizer=sgd"]
# Two members of different seeds, so of different data orders: on 2 processes x 2 devices each process holds
# one member's state and streams that member's batches (a process reading the other's would be seen).
SWEEP = ["--sweep=seed=0,1", "--config.data_placement=stream"]
SWEEP_MEMBERS = [{"seed": 0}, {"seed": 1}]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(script: str, args, *, devices: int, process_id: int | None = None, port: int | None = None,
            num_processes: int = 2, extra=()) -> subprocess.Popen:
  """One process of `script`: alone (process_id None) or one of `num_processes` on 127.0.0.1:`port`."""
  path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)  # This checkout's ae_jax.
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
  dist = [] if process_id is None else [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                                        f"--process_id={process_id}", "--heartbeat_timeout=10"]
  # Files, not pipes: a process blocked on a full pipe that nobody reads would stall the others too.
  logs = [tempfile.TemporaryFile("w+", encoding="utf-8") for _ in range(2)]
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", script), *args, *dist, *extra],
                          cwd=ROOT, env=env, stdout=logs[0], stderr=logs[1], text=True)
  proc.logs = logs
  return proc


def _two(script: str, args) -> list[subprocess.Popen]:
  port = _free_port()
  return [_launch(script, args, devices=2, process_id=i, port=port) for i in range(2)]


def _wait(procs, timeout=240) -> list[tuple[int, str, str]]:
  """(returncode, stdout, stderr) of each process, once all have ended."""
  deadline = time.monotonic() + timeout
  for p in procs:
    try:
      p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  outs = []
  for p in procs:
    texts = []
    for f in p.logs:
      f.seek(0)
      texts.append(f.read())
      f.close()
    outs.append((p.returncode, *texts))
  return outs


def _ok(outs):
  for i, (rc, _, err) in enumerate(outs):
    assert rc == 0, (i, err[-3000:])


def _printed(stdout: str) -> str:
  """What the program printed (gloo prints its connections to stdout too, from its own threads: a line of
  it may come split in two, "[Gloo] Rank 1 is connected to 1 peer ranks. " and "Expected number ...")."""
  gloo = re.compile(r"^(\[Gloo\].*|.*Expected number of connected peer ranks is : \d+)$")
  return "\n".join(line for line in stdout.splitlines() if not gloo.match(line)).strip()


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _eval(workdir):
  with open(os.path.join(workdir, "eval.json"), encoding="utf-8") as f:
    return json.load(f)


def _assert_same_run(workdir, reference):
  """The same logged metrics, step by step, and the same evaluation as `reference`."""
  rows, ref = _rows(workdir), _rows(reference)
  assert [r["step"] for r in rows] == [r["step"] for r in ref]
  for row, r in zip(rows, ref):
    assert row.keys() == r.keys()
    for k in r:
      assert row[k] == pytest.approx(r[k], rel=1e-5, abs=1e-7), (row["step"], k)
  got, want = _eval(workdir), _eval(reference)
  assert got.keys() == want.keys()
  for k in want:
    assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k


@pytest.fixture(scope="module")
def references(tmp_path_factory):
  """The run and the sweep on 1 process x 4 devices: this one (tests/conftest.py), as CONFIG and SWEEP say."""
  from ae_jax import sweep  # pylint: disable=g-import-not-at-top
  from ae_jax import train  # pylint: disable=g-import-not-at-top
  from configs import test as test_config  # pylint: disable=g-import-not-at-top

  assert jax.process_count() == 1 and jax.device_count() == 4
  base = tmp_path_factory.mktemp("one_process")
  config = test_config.get_config()
  config.update(num_steps=60, checkpoint_every=20, num_pictures=0, optimizer="sgd")
  train.train_and_evaluate(config, str(base / "run"))
  config.data_placement = "stream"
  sweep.run(config, SWEEP_MEMBERS, str(base / "sweep"))
  return base


def test_two_processes_train_what_one_process_does(references, tmp_path):
  outs = _wait(_two("train.py", [*CONFIG, f"--workdir={tmp_path}"]))
  _ok(outs)
  assert "Evaluation on the test split" in outs[0][1]  # Process 0 reports; process 1 prints nothing.
  assert _printed(outs[1][1]) == ""
  _assert_same_run(tmp_path, references / "run")
  with open(tmp_path / "status.json", encoding="utf-8") as f:
    assert json.load(f)["status"] == "done"


def test_a_sweep_over_two_processes_equals_one_process(references, tmp_path):
  outs = _wait(_two("sweep.py", [*CONFIG, *SWEEP, f"--workdir={tmp_path}"]))
  _ok(outs)
  assert "seed" in outs[0][1] and _printed(outs[1][1]) == ""
  names = sorted(d for d in os.listdir(references / "sweep") if os.path.isdir(references / "sweep" / d))
  assert len(names) == 2
  first, second = (_rows(references / "sweep" / name)[0] for name in names)
  assert first["loss"] != pytest.approx(second["loss"], rel=1e-3)  # Their own data: the members differ.
  for name in names:
    _assert_same_run(tmp_path / name, references / "sweep" / name)
  with open(tmp_path / "sweep.csv", encoding="utf-8") as f, open(references / "sweep" / "sweep.csv",
                                                                 encoding="utf-8") as g:
    assert len(f.read().splitlines()) == len(g.read().splitlines()) == 3


def test_a_dead_process_stops_the_other_and_the_same_launch_resumes(references, tmp_path):
  procs = _two("train.py", [*CONFIG, f"--workdir={tmp_path}"])
  first = tmp_path / "checkpoints" / "20"
  deadline = time.monotonic() + 120
  while not first.exists() and time.monotonic() < deadline and procs[1].poll() is None:
    time.sleep(0.02)
  assert first.exists(), _wait(procs)
  os.kill(procs[1].pid, signal.SIGKILL)
  start = time.monotonic()
  (rc0, _, err0), _ = _wait(procs, timeout=60)
  stopped_after = time.monotonic() - start
  if not (tmp_path / "status.json").exists():  # Process 0 had not finished alone: it must stop by itself.
    assert rc0 != 0 and stopped_after < 30, (rc0, stopped_after, err0[-2000:])
    errors = [line for line in err0.splitlines() if line.startswith("error:")]
    fatal = [line for line in err0.splitlines() if re.match(r"F\d{4} ", line)]  # JAX's runtime (absl FATAL).
    # A collective that sees the closed connection gives ae_jax's line; a process busy elsewhere (an
    # orbax barrier, computing) is ended by JAX's runtime itself once the coordination service notices.
    assert (errors and errors[-1].startswith("error: process 0 of 2: lost another process")) or fatal, (
        errors, [line for line in err0.splitlines() if line.startswith(("E1", "F1"))][-5:])
  outs = _wait(_two("train.py", [*CONFIG, f"--workdir={tmp_path}"]))
  _ok(outs)
  assert "Resumed" in outs[0][2], outs[0][2][-3000:]
  _assert_same_run(tmp_path, references / "run")


def test_a_missing_process_fails_fast_with_one_line(tmp_path):
  start = time.monotonic()
  proc = _launch("train.py", [*CONFIG, f"--workdir={tmp_path}"], devices=2, process_id=0, port=_free_port(),
                 extra=["--distributed_timeout=3"])
  ((rc, _, err),) = _wait([proc], timeout=60)
  assert rc != 0 and time.monotonic() - start < 40, (rc, err[-2000:])
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, err[-2000:]
  assert "process 0 of 2" in errors[0] and "--distributed_timeout=3" in errors[0], errors[0]
  assert "--coordinator_address" in errors[0]


def test_set_point_members_over_two_processes_equal_one_process(tmp_path):
  # The controller's state is sharded with its member and moved by the global batch's KL: 2 processes x 2
  # devices (a member's batch split over both processes' devices) adapt beta as 1 process x 4 devices does.
  args = ["--config=experiments/configs/test.py", "--config.family=vae", "--config.num_steps=30",
          "--config.num_pictures=0", "--config.optimizer=sgd", "--config.evaluate=quick", "--config.kl_target=1",
          "--config.setpoint_rate=0.2", "--sweep=kl_target=0.5,2"]
  one = _launch("sweep.py", [*args, f"--workdir={tmp_path}/one"], devices=4)
  two = _two("sweep.py", [*args, f"--workdir={tmp_path}/two"])
  outs = _wait([one, *two])
  _ok(outs)
  names = [d for d in os.listdir(tmp_path / "one") if os.path.isdir(tmp_path / "one" / d)]
  assert len(names) == 2
  for name in names:
    _assert_same_run(tmp_path / "two" / name, tmp_path / "one" / name)
    coefficients = [r["setpoint_coefficient"] for r in _rows(tmp_path / "one" / name) if "setpoint_coefficient" in r]
    assert coefficients and coefficients[-1] != 1.0  # The controller moved beta.
  assert os.path.exists(tmp_path / "two" / "frontier.png")
