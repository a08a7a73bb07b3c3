"""Where the step's time goes: the plain step of benchmarks/plain_loop.py with one suspect added at a time.

  python -m benchmarks.step_costs --out=/tmp/step_costs.jsonl                  # batch 128, 15 rounds
  python -m benchmarks.step_costs --batch_size=128,1024 --out=/tmp/step_costs.jsonl
  python -m benchmarks.step_costs --quick                                     # CI: runs, numbers mean nothing

The model is Kingma & Welling's MNIST VAE (MLP 784-400-20, ReLU, Bernoulli decoder, Adam 1e-3) on
MNIST-shaped random images in [0, 1]. `plain` is plain_loop.py's step (one jitted call per step, the
batch gathered with `lax.dynamic_slice` of a per-epoch permutation made on the host side, one key per
step, one normal draw for the whole batch, `harness.AdamStep`). Each other variant adds what ae_jax's step does, alone:

  a per_example_keys  the step key split into B keys, the normal draw vmapped over them
  b norms             grad_norm, param_norm and update_norm (global l2 norms) computed and returned
  c cond_permutation  the permutation carried on device, redrawn under `lax.cond` at each epoch start
  d shard_map         the update in `jax.shard_map` over a 1-device mesh: params `pcast` to varying,
                      `lax.pmean` of grads and loss
  e dynamic_binarize  the batch resampled as Bernoulli(x) every step
  f all               a-e together
  g scan              the plain step in `lax.scan`, --steps steps per jitted call (ae_jax's chunk)
  all_scan            a-e inside the scan: close to ae_jax's own step
  plain_loop_py       plain_loop.PlainLoop itself, a check that `plain` is its step (ratio ~1)

(The plain step inside the scan keeps one permutation per call, made on the host at the call's first
step: steps past an epoch boundary within a call reuse it. That changes which examples are drawn, not
the work.) Every timed call runs --steps steps and waits once, at the end. Variants are timed
round-robin (`harness.round_robin`), --repeats rounds alternating direction; `ratio_to_plain` is the
median over rounds of (variant's step time / plain's in the same round). stdout: a JSON line of
device info, then one per variant.
"""

from collections.abc import Callable, Sequence
import functools
import statistics
import time
from typing import Any

from absl import app
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from ae_jax import cli
from ae_jax import families
from ae_jax import models
from ae_jax.losses import reconstruction
from ae_jax.losses import variational
from benchmarks import harness
from benchmarks import plain_loop

SUSPECTS = ("keys", "norms", "cond", "shard_map", "binarize")
VARIANTS: dict[str, tuple[str, ...]] = {
    "plain": (), "a_per_example_keys": ("keys",), "b_norms": ("norms",), "c_cond_permutation": ("cond",),
    "d_shard_map": ("shard_map",), "e_dynamic_binarize": ("binarize",), "f_all": SUSPECTS, "g_scan": ("scan",),
    "all_scan": SUSPECTS + ("scan",), "plain_loop_py": ("plain_loop_py",)}
# Its flags are harness's: --batch_size, --steps (per timed and per scanned call), --repeats, --num_examples,
# --quick and --out, with this script's own defaults.
DEFAULTS = {"batch_size": ["128"], "steps": 32, "repeats": 15}


def per_example_loss(config, model) -> Callable[..., jax.Array]:
  """plain_loop's VAE loss with the noise drawn from B keys split from the step key (ae_jax's way)."""

  def loss(params, x, key):
    apply = functools.partial(model.apply, {"params": params})
    mean, logvar = apply(x, method="encode")
    keys = jax.random.split(key, len(x))
    z = jax.vmap(variational.reparameterize)(keys, mean, logvar)
    rec = reconstruction.from_logits(apply(z, method="decode"), x, kind=config.reconstruction)
    return (rec + config.beta * variational.kl_standard_normal(mean, logvar)).mean()

  return loss


def make_step(config, model, suspects: Sequence[str], num_examples: int) -> tuple[Callable[..., Any], harness.AdamStep]:
  """`(params, opt_state, images, perm, i, key) -> (params, opt_state, perm, out)`, not jitted, and its Adam
  step (whose `init` makes the optimizer state)."""
  batch, per_epoch = config.batch_size, num_examples // config.batch_size
  loss = per_example_loss(config, model) if "keys" in suspects else plain_loop.make_loss(config, model)
  shard = "shard_map" in suspects
  adam = harness.AdamStep(loss, config.learning_rate, axis_name="data" if shard else None)

  def update(params, opt_state, x, key):
    new, opt_state, value, grads, updates = adam(params, opt_state, x, key)
    if "norms" in suspects:
      value = (value, optax.tree.norm(grads), optax.tree.norm(new), optax.tree.norm(updates))
    return new, opt_state, value

  if shard:
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))  # Auto axes, as ae_jax.step.make_mesh.
    update = jax.shard_map(update, mesh=mesh, in_specs=(P(), P(), P("data"), P()), out_specs=P())

  def step(params, opt_state, images, perm, i, key):
    pos = i % per_epoch
    if "cond" in suspects:
      perm = lax.cond(pos == 0, lambda: jax.random.permutation(jax.random.fold_in(key, i // per_epoch),
                                                               num_examples), lambda: perm)
    x = images[lax.dynamic_slice(perm, (pos * batch,), (batch,))]
    binarize_key, loss_key = jax.random.split(jax.random.fold_in(key, i))
    if "binarize" in suspects:
      x = jax.random.bernoulli(binarize_key, x).astype(x.dtype)
    params, opt_state, value = update(params, opt_state, x, loss_key)
    return params, opt_state, perm, value

  return step, adam


class Runner:
  """One variant's compiled step and training state; a call trains `steps` steps, syncs once, returns seconds."""

  def __init__(self, config, images: jax.Array, suspects: Sequence[str], steps: int, warmup: bool):
    self.steps, self.i, self.key, self.n = steps, 0, jax.random.key(config.seed + 1), len(images)
    self.per_epoch, self.images = self.n // config.batch_size, images
    self.plain_loop = plain_loop.PlainLoop(config, images, seed=config.seed) if "plain_loop_py" in suspects else None
    model = families.model_from_config(config, images.shape[1:])
    step, adam = make_step(config, model, suspects, self.n)
    self.params = models.init(model, jax.random.key(config.seed), images.shape[1:])
    self.opt_state = adam.init(self.params)
    self.carry_perm, self.scan = "cond" in suspects, "scan" in suspects
    self.permutation = jax.jit(lambda key, epoch: jax.random.permutation(jax.random.fold_in(key, epoch), self.n))
    self.perm, self.epoch = self.permutation(self.key, 0), 0
    if self.scan:
      def chunk(params, opt_state, images, perm, i, key):
        def body(carry, _):
          params, opt_state, perm, i = carry
          params, opt_state, perm, value = step(params, opt_state, images, perm, i, key)
          return (params, opt_state, perm, i + 1), value
        (params, opt_state, perm, _), values = lax.scan(body, (params, opt_state, perm, i), length=steps)
        return params, opt_state, perm, values
      self.fn = jax.jit(chunk, donate_argnums=(0, 1))
    elif self.carry_perm:
      self.fn = jax.jit(step, donate_argnums=(0, 1))
    else:  # Without the cond the permutation is an input only, as in plain_loop.py.
      def no_perm(*args):
        params, opt_state, _, value = step(*args)
        return params, opt_state, None, value
      self.fn = jax.jit(no_perm, donate_argnums=(0, 1))
    start = time.perf_counter()
    self(1)  # Compiles (a scanned variant runs one whole call).
    self(1)  # shard_map's outputs come back sharded over its mesh: their first call as inputs recompiles.
    self.compile_s = time.perf_counter() - start
    if warmup:
      self()

  def __call__(self, steps: int | None = None) -> float:
    """Trains `steps` (default self.steps; a scanned variant always self.steps) steps; returns seconds."""
    steps = self.steps if self.scan else steps or self.steps
    start = time.perf_counter()
    if self.plain_loop is not None:
      self.loss = self.plain_loop.run(steps)  # Its own loop; fetching the last loss is its one sync.
      return time.perf_counter() - start
    for _ in range(1 if self.scan else steps):
      epoch = self.i // self.per_epoch
      if not self.carry_perm and epoch != self.epoch:
        self.perm, self.epoch = self.permutation(self.key, epoch), epoch
      self.params, self.opt_state, perm, value = self.fn(self.params, self.opt_state, self.images, self.perm,
                                                         np.int32(self.i), self.key)
      self.perm = perm if self.carry_perm else self.perm
      self.i += steps if self.scan else 1
    value = jax.block_until_ready(value)
    seconds = time.perf_counter() - start
    self.loss = float(jnp.ravel(value[0] if isinstance(value, tuple) else value)[-1])
    return seconds


def run_batch(batch: int, images: jax.Array, steps: int, repeats: int, warmup: bool) -> list[dict[str, Any]]:
  """Times every variant at `batch`, round-robin; one row per variant."""
  config = harness.family_config("vae", batch, widths=(400,), latent_dim=20, activation="relu",
                                 reconstruction="bernoulli", optimizer="adam", learning_rate=1e-3)
  runners = {name: Runner(config, images, suspects, steps, warmup) for name, suspects in VARIANTS.items()}
  seconds, _ = harness.round_robin(list(runners.values()), repeats)
  per_step = {name: [t / steps for t in times] for name, times in zip(runners, seconds)}
  rows = []
  for name, times in per_step.items():
    rows.append({
        "variant": name, "suspects": list(VARIANTS[name]), "batch_size": batch,
        "step_time_s": statistics.median(times), "examples_per_s": batch / statistics.median(times),
        "ratio_to_plain": harness.median_ratio(times, per_step["plain"]),
        "steps": steps, "repeats": repeats, "compile_s": runners[name].compile_s,
        "final_loss": runners[name].loss})
  return rows


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --batch_size=128,1024")
  harness.set_defaults(**DEFAULTS)
  batches = harness.positive_ints("batch_size", harness.BATCH_SIZE.value)
  steps, repeats, num, warmup = harness.STEPS.value, harness.REPEATS.value, harness.NUM_EXAMPLES.value, True
  if harness.QUICK.value:
    batches, steps, repeats, num, warmup = [16], 2, 1, 256, False
  if steps < 1:
    cli.fail(f"--steps={steps} must be positive")
  if max(batches) > num:
    cli.fail(f"--batch_size needs batches no larger than --num_examples={num}")
  images = jax.device_put(harness.random_images(num))
  with harness.json_lines(harness.OUT.value) as emit:
    emit(harness.device_info(cpu=harness.cpu_model(),
                             threefry_partitionable=bool(jax.config.jax_threefry_partitionable)))
    for batch in batches:
      for row in run_batch(batch, images, steps, repeats, warmup):
        emit(row)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
