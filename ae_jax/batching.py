"""One way to run a function over a large array: fixed-size batches, the last one padded.

A jitted function compiles once per input shape, so every batch has the same size: the last one is
padded by repeating its last example, and the padded rows are dropped from the outputs on the host.
`example_keys` turns the example indices each batch comes with into per-example PRNG keys, so random
draws do not depend on the batch size.
"""

from collections.abc import Callable, Iterator, Sequence
import time
from typing import Any

from absl import logging
import jax
import numpy as np

PROGRESS_EVERY_S = 10.0  # A `map_batches` call longer than this logs done / total, rate and ETA.


def slices(n: int, batch_size: int) -> Iterator[slice]:
  """Consecutive slices of at most `batch_size` covering range(n)."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  for start in range(0, n, batch_size):
    yield slice(start, min(start + batch_size, n))


def map_batches(fn: Callable[..., Any], arrays: Sequence[Any], *, batch_size: int, args: Sequence[Any] = (),
                with_indices: bool = False, label: str = "evaluation") -> Any:
  """`fn(*args, *batch[, indices])` over fixed-size batches of `arrays`; its outputs concatenated on the host.

  Args:
    fn: returns a pytree of arrays with a leading example axis. Pass what differs between calls of one
      compiled program (params as `jax.tree_util.Partial`s, keys) in `args`, not in a closure.
    arrays: arrays of one leading length N, sliced together along it.
    batch_size: examples per call, at most N: the last batch is padded (edge repeat) to it.
    args: passed first, unbatched.
    with_indices: also pass the batch's int32 example indices (padded rows repeat the last one), e.g.
      for `example_keys`.
    label: names the work in the progress log, written every PROGRESS_EVERY_S seconds.

  Returns:
    fn's output pytree with each leaf (N, ...), as numpy arrays.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  n = len(arrays[0])
  if n == 0 or any(len(a) != n for a in arrays):
    raise ValueError(f"arrays must be non-empty and share their leading length, got {[len(a) for a in arrays]}")
  size = min(batch_size, n)
  outputs = []
  start = last = time.perf_counter()
  for s in slices(n, size):
    real = s.stop - s.start
    batch = [np.asarray(a[s]) for a in arrays]
    if with_indices:
      batch.append(np.arange(s.start, s.stop, dtype=np.int32))
    if real < size:
      batch = [np.concatenate([b, np.repeat(b[-1:], size - real, axis=0)]) for b in batch]
    out = fn(*args, *batch)
    outputs.append(jax.tree.map(lambda o, real=real: np.asarray(o)[:real], out))
    now = time.perf_counter()
    if now - last >= PROGRESS_EVERY_S and s.stop < n:
      rate = s.stop / (now - start)
      logging.info("%s: %d/%d examples, %.1f examples/s, ETA %.0fs", label, s.stop, n, rate, (n - s.stop) / rate)
      last = now
  return jax.tree.map(lambda *parts: np.concatenate(parts, axis=0), *outputs)


def example_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
  """One key per example, fold_in(key, index): the same draw whatever batch the example falls in."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def as_pytree(fn: Callable[..., Any]) -> jax.tree_util.Partial:
  """A callable as a pytree argument of a jitted function: a Partial's bound arrays are traced, not baked in."""
  return fn if isinstance(fn, jax.tree_util.Partial) else jax.tree_util.Partial(fn)
