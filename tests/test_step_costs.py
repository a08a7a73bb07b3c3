"""benchmarks/step_costs.py in --quick mode, and the claim of issue 9 that per-example keys are not needed
for device-count invariance: with `jax_threefry_partitionable` one key draws the same global batch
however the batch is sharded (the suite's 4 fake CPU devices, conftest)."""

import json
import math
import os
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from ae_jax import cli
from benchmarks import harness
from benchmarks import step_costs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ["plain", "a_per_example_keys", "b_norms", "c_cond_permutation", "d_shard_map", "e_dynamic_binarize",
            "f_all", "g_scan", "all_scan", "plain_loop_py"]


def test_quick_run_prints_every_variant_with_a_finite_ratio(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
  out = subprocess.run([sys.executable, "-m", "benchmarks.step_costs", "--quick", f"--out={tmp_path}/costs.jsonl"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  assert lines == open(tmp_path / "costs.jsonl").read().splitlines()
  device, *rows = map(json.loads, lines)
  assert {"jax", "cpu_count", "backend", "threefry_partitionable"} <= set(device)
  assert [r["variant"] for r in rows] == VARIANTS
  for row in rows:
    assert row["batch_size"] == 16 and row["steps"] == 2, row
    for key in ("ratio_to_plain", "step_time_s", "examples_per_s", "final_loss"):
      assert math.isfinite(row[key]) and (key == "final_loss" or row[key] > 0), (key, row)
  # The same draws and the same math: the plain step is plain_loop.py's, and norms, the cond and
  # shard_map change no number it computes.
  loss = {r["variant"]: r["final_loss"] for r in rows}
  for name in ("b_norms", "c_cond_permutation", "d_shard_map", "plain_loop_py"):
    assert loss[name] == pytest.approx(loss["plain"], rel=1e-5), name


def test_script_defaults_apply_unless_a_flag_is_given():
  with flagsaver.flagsaver():
    cli.parse_flags(["step_costs", "--repeats=3"])
    harness.set_defaults(**step_costs.DEFAULTS)
    assert (harness.REPEATS.value, harness.STEPS.value, harness.BATCH_SIZE.value) == (3, 32, ["128"])
  assert flags.FLAGS["steps"].default == 0  # Restored: benchmark.py's default.


def _mesh(n: int) -> Mesh:
  return Mesh(np.asarray(jax.devices()[:n]), ("data",))


def test_one_key_draws_the_same_global_batch_on_one_and_four_devices():
  assert jax.device_count() == 4 and jax.config.jax_threefry_partitionable
  key, shape = jax.random.key(3), (64, 20)
  draws, local = {}, {}
  for n in (1, 4):
    mesh = _mesh(n)
    sharding = NamedSharding(mesh, P("data"))
    x = jax.device_put(jnp.linspace(0, 1, math.prod(shape)).reshape(shape), sharding)
    draw = jax.jit(lambda k, x: (jax.random.normal(k, shape), jax.random.bernoulli(k, x)),
                   out_shardings=(sharding, sharding))
    # Partitioned: each device draws its own rows, with no communication.
    assert "all-gather" not in draw.lower(key, x).compile().as_text()
    draws[n] = [np.asarray(a) for a in draw(key, x)]
    # Inside shard_map a device draws its local block from the key: that depends on the device count.
    local[n] = np.asarray(jax.jit(jax.shard_map(lambda k, n=n: jax.random.normal(k, (shape[0] // n, shape[1])),
                                                mesh=mesh, in_specs=P(), out_specs=P("data")))(key))
  for one, four in zip(draws[1], draws[4]):
    np.testing.assert_array_equal(one, four)
  assert not np.array_equal(local[1], local[4])
