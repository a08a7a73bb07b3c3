"""What training needs to run as several processes (hosts) of JAX's multi-controller runtime.

Every process runs the same program on the same data; `jax.devices()` lists the devices of all of
them, and one mesh over those spans the processes. Arrays are then global: each process holds the
shards on its own devices. The helpers here move host values in and out of such arrays without
collectives the caller does not see, and keep files to one writer. On one process they reduce to
`device_put`, `device_get` and nothing.

Every function that is a collective (`fetch`, `member`, `barrier`) must be called by all processes
in the same order, from the main thread.
"""

import functools
from typing import Any

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np


def is_main() -> bool:
  """Whether this process writes files and prints (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process gets here (after process 0 wrote what the others are about to read)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Host arrays (the same on every process) to global arrays laid out by `sharding`.

  Each process copies only the slices its own devices hold: unlike `jax.device_put` into a layout
  that spans processes, this runs no cross-process check, so it is safe from a background thread.
  """

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(one, tree)


def fetch(tree: Any) -> Any:
  """Global arrays to numpy on every process (an all-gather for those that span other processes)."""
  leaves, treedef = jax.tree.flatten(tree)
  spread = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and not x.is_fully_addressable
            and not x.is_fully_replicated]
  out = [np.asarray(jax.device_get(x)) if i not in spread else None for i, x in enumerate(leaves)]
  if spread:
    gathered = multihost_utils.process_allgather([leaves[i] for i in spread], tiled=True)
    for i, x in zip(spread, gathered):
      out[i] = np.asarray(x)
  return jax.tree.unflatten(treedef, out)


@functools.lru_cache(maxsize=16)
def _member_fn(sharding: NamedSharding):
  return jax.jit(lambda tree, i: jax.tree.map(lambda x: x[i], tree), out_shardings=sharding)


def member(tree: Any, i: int, mesh: jax.sharding.Mesh) -> Any:
  """Member `i` of a tree with a leading member axis, replicated over `mesh` (so every process holds
  it, wherever the member trained): what a checkpoint of one member saves. One compile for all `i`."""
  return _member_fn(NamedSharding(mesh, P()))(tree, np.int32(i))
