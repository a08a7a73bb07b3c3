"""Training throughput of every family, against a matmul-peak bound measured in the same run.

  python experiments/benchmark.py                                  # every case, batch 128 and 1024
  python experiments/benchmark.py --family=vae --batch_size=128
  python experiments/benchmark.py --family=contractive --encoders=A --paths=mlp,stochastic
  python experiments/benchmark.py --architecture=conv --family=undercomplete --batch_size=128
  python experiments/benchmark.py --quick                          # CI: runs every case tiny, no speed

Each case trains with the real loop (`train.make_train_chunk`: on-device shuffling, the fused scan,
every metric of the step, metrics fetched to the host after each call) on MNIST-shaped images,
random by default. After compiling and one warm-up call, it times `--repeats` calls of `--steps`
steps each and reports medians; stdout gets one JSON object per line: first the device, then one
per case.

The bound: `matmul_gflops` is a large float32 matmul timed in the same process; a training step of
an MLP costs about 6 x (multiply-accumulates of the forward pass) FLOPs per example (2 forward,
4 backward), so `bound_examples_per_s = matmul_flops / (6 * macs_per_example)` and
`peak_fraction = examples_per_s / bound_examples_per_s`. The contractive penalty's own FLOPs are not
counted: its peak_fraction is against the plain AE's bound. The matmul is re-timed before every
round of calls, and fractions and ratios are medians of per-round values, so load from other
processes that slows one round slows both sides of its ratio.

Every non-contractive case is timed round-robin with two hand-written loops (experiments/plain_loop.py):
`plain`, the model and loss as a user writes them (flax's `nn.ConvTranspose` for conv models, optax's
losses on image-shaped batches; its `vs_plain` is the headline), and `plain` with ae_jax's own layers
and loss terms (`plain_model: ae_jax`; `vs_plain_same_model` isolates the loop from the parts).
Conv cases (`--architecture=conv`: the same families with the conv (32, 64) encoder and its mirrored
decoder, `CONV_SHAPE`; not contractive) take `CONV_STEPS` examples per call, not 4096: flax's
transposed conv is slow.

Contractive cases (encoder A: 784-1000 sigmoid, Rifai et al.'s setting; encoder B: 784-400-32 ReLU,
linear code) are timed round-robin with the plain undercomplete AE of the same encoder and decoder,
and report `step_time_ratio` (their step time / the plain step time) and `memory_ratio`.

`peak_memory_bytes`: XLA's memory analysis of the compiled chunk, arguments + outputs + temporaries
- donated aliases, less the on-device dataset (the same for every case): what training adds on top
of holding the data. On GPUs `device_peak_bytes_in_use` adds the allocator's peak for the process
so far (it cannot be reset, so it only grows from case to case).
"""

from collections.abc import Callable, Sequence
import contextlib
import dataclasses
import functools
import importlib
import json
import math
import os
import platform
import statistics
import time
from typing import Any

from absl import app
from absl import flags
import jax
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax import cli
from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import families
from ae_jax import hparams
from ae_jax import models

FAMILIES = ("undercomplete", "sparse", "denoising", "vae", "contractive")
PATHS = ("jacfwd", "jacrev", "mlp", "stochastic")
NAIVE_PATHS = ("jacfwd", "jacrev")  # They build each example's (k, d) Jacobian.
# The MLP of Kingma & Welling's MNIST VAE; the other non-contractive families use it too.
MLP_SHAPE = {"widths": (400,), "latent_dim": 20}
CONV_SHAPE = {"architecture": "conv", "widths": (32, 64), "latent_dim": 20}
ARCHITECTURES = ("mlp", "conv")
CONV_STEPS = 512  # Examples per timed call of a conv case (default --steps): at least 2 steps.
ENCODERS = {
    "A": {"widths": (), "latent_dim": 1000, "code_activation": "sigmoid"},
    "B": {"widths": (400,), "latent_dim": 32, "activation": "relu", "code_activation": "linear"},
}
EXAMPLE_SHAPE = (28, 28, 1)

_FAMILY = flags.DEFINE_list("family", ["all"], f"Families to run, or 'all': {', '.join(FAMILIES)}.")
_ARCHITECTURE = flags.DEFINE_list("architecture", ["mlp"], "Models: mlp (the families' MLPs and the "
                                   "contractive encoders), conv (conv (32, 64), not contractive).")
_BATCH = flags.DEFINE_list("batch_size", ["128", "1024"], "Global batch sizes.")
_PATHS = flags.DEFINE_list("paths", list(PATHS), "Contractive penalty paths.")
_ENCODERS = flags.DEFINE_list("encoders", list(ENCODERS), "Contractive encoders: A (784-1000 sigmoid), "
                              "B (784-400-32 ReLU).")
_STEPS = flags.DEFINE_integer("steps", 0, "Steps per timed call (0: 4096 examples' worth, at least 2).")
_NAIVE_STEPS = flags.DEFINE_integer("naive_steps", 1, "Steps per timed call of the jacfwd/jacrev paths.")
_NAIVE_MAX_BATCH = flags.DEFINE_integer(
    "naive_max_batch", 128, "Run the naive jacfwd/jacrev paths only up to this batch size (0: never).")
_REPEATS = flags.DEFINE_integer("repeats", 11, "Timed calls per case (after one warm-up call).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 10_000, "Random training images (--dataset=random).")
_DATASET = flags.DEFINE_string("dataset", "random", "'random' (MNIST-shaped uniform noise) or any "
                               "--config.dataset value, e.g. npz:/data/mnist.npz.")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Side of the square float32 matmul that sets the peak.")
_QUICK = flags.DEFINE_bool("quick", False, "CI mode: every case at batch 16 on 256 examples, 2 steps, "
                           "1 repeat, no warm-up, a small matmul. Checks that it runs; the numbers mean nothing.")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON lines to this file.")
_PROFILE = flags.DEFINE_string("profile_dir", "", "Trace the timed calls with jax.profiler into this "
                               "directory (TensorBoard or Perfetto); tracing slows them a little.")


@dataclasses.dataclass(frozen=True)
class Options:
  """What to run; `main` fills it from flags, tests build it directly."""

  families: Sequence[str] = FAMILIES
  architectures: Sequence[str] = ("mlp",)
  batch_sizes: Sequence[int] = (128, 1024)
  paths: Sequence[str] = PATHS
  encoders: Sequence[str] = tuple(ENCODERS)
  steps: int = 0
  naive_steps: int = 1
  naive_max_batch: int = 128
  repeats: int = 11
  num_examples: int = 10_000
  dataset: str = "random"
  matmul_size: int = 2048
  warmup: bool = True
  fast_compile: bool = False  # XLA backend optimization level 0: half the compile time, slower code.
  profile_dir: str = ""


QUICK = {"batch_sizes": (16,), "steps": 2, "naive_steps": 1, "naive_max_batch": 1 << 30, "repeats": 1,
         "num_examples": 256, "matmul_size": 256, "warmup": False, "fast_compile": True}
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@dataclasses.dataclass
class Case:
  """One training configuration; `encoder` and `penalty_path` only for contractive comparisons."""

  config: ml_collections.ConfigDict
  steps: int
  encoder: str | None = None
  penalty_path: str | None = None
  members: int = 1  # Members trained by one program (seeds seed, seed + 1, ...).
  vectorize: bool = True  # Members vmapped (else one after another in the program).
  plain: bool = False  # The hand-written loop of experiments/plain_loop.py instead of ae_jax's.
  # The plain loop's parts: "flax", as a user writes them (flax's conv layers, optax's losses), or
  # "ae_jax", ae_jax's own layers and loss terms (the loop alone differs).
  plain_model: str = "flax"

  @property
  def family(self) -> str:
    return self.config.family


def family_config(family: str, batch_size: int, **overrides) -> ml_collections.ConfigDict:
  """The family's own config file (experiments/configs/, on sys.path as for train.py), overridden."""
  config = importlib.import_module(f"configs.{family}").get_config()
  config.update({"batch_size": batch_size, **overrides})
  config_lib.validate(config)
  return config


def build_cases(options: Options) -> list[list[Case]]:
  """Groups of cases timed round-robin: a family alone, or a plain AE with its contractive paths."""
  groups = []
  for batch in options.batch_sizes:
    steps = options.steps or max(2, 4096 // batch)
    if "conv" in options.architectures:
      conv_steps = options.steps or max(2, CONV_STEPS // batch)
      for family in options.families:
        if family != "contractive":
          config = family_config(family, batch, **CONV_SHAPE)
          groups.append([Case(config, conv_steps), Case(config, conv_steps, plain=True),
                         Case(config, conv_steps, plain=True, plain_model="ae_jax")])
    if "mlp" not in options.architectures:
      continue
    for family in options.families:
      if family != "contractive":
        config = family_config(family, batch, **MLP_SHAPE)
        groups.append([Case(config, steps), Case(config, steps, plain=True),
                       Case(config, steps, plain=True, plain_model="ae_jax")])
        continue
      for name in options.encoders:
        # The slow naive paths last, so the fast ones are timed right next to their plain AE.
        paths = [p for p in options.paths if p not in NAIVE_PATHS]
        paths += [p for p in options.paths if p in NAIVE_PATHS and batch <= options.naive_max_batch]
        if not paths:
          continue
        group = [Case(family_config("undercomplete", batch, **ENCODERS[name]), steps, encoder=name)]
        for path in paths:
          config = family_config("contractive", batch, contractive_path=path, **ENCODERS[name])
          group.append(Case(config, options.naive_steps if path in NAIVE_PATHS else steps, name, path))
        groups.append(group)
  return groups


def _count_macs(jaxpr) -> int:
  """Multiply-accumulates of the dot_general and conv ops in a jaxpr (scan bodies times length)."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    elif name == "conv_general_dilated":
      kernel = eqn.invars[1].aval.shape
      out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) // out_features
    subs = [getattr(v, "jaxpr", v) for v in eqn.params.values() for v in (v if isinstance(v, (list, tuple)) else [v])]
    subs = [_count_macs(s) for s in subs if hasattr(s, "eqns")]
    if subs:
      total += max(subs) if name == "cond" else sum(subs) * eqn.params.get("length", 1)
  return total


def forward_macs(model, params, example_shape: Sequence[int]) -> int:
  """Multiply-accumulates per example of encode + decode (both VAE heads; no loss, no penalty)."""
  x = jnp.zeros((1, *example_shape), jnp.float32)

  def forward(params, x):
    code = model.apply({"params": params}, x, method="encode")
    z = code[0] if isinstance(code, tuple) else code
    return code, model.apply({"params": params}, z, method="decode")

  return _count_macs(jax.make_jaxpr(forward)(params, x).jaxpr)


def describe(config, example_shape: Sequence[int]) -> str:
  """The encoder, e.g. 'mlp 784-400(relu)-20(linear)'; the decoder mirrors it."""
  code = "gaussian" if config.family == "vae" else config.code_activation
  layers = [f"{w}({config.activation})" for w in config.widths] + [f"{config.latent_dim}({code})"]
  return f"{config.architecture} {'-'.join([str(math.prod(example_shape)), *layers])}"


@functools.lru_cache(maxsize=None)
def _initializer(model, example_shape, optimizer_keys: str, mesh, compiler_options):
  """A compiled `hp -> TrainState` (stacked members), shared by cases with the same model (a plain AE
  and its contractive twins): one compile instead of dozens of eagerly compiled initializer ops."""
  from ae_jax import step as step_lib  # pylint: disable=g-import-not-at-top

  make_opt = step_lib.make_optimizer(ml_collections.ConfigDict(json.loads(optimizer_keys)))
  init = step_lib.make_init(lambda key: models.init(model, key, example_shape), make_opt, mesh)
  return jax.jit(init, compiler_options=dict(compiler_options))


class Runner:
  """One case's compiled training chunk and state; each call trains `case.steps` steps."""

  def __init__(self, case: Case, images: jax.Array, labels: jax.Array, mesh, dataset_bytes: int,
               warmup: bool = True, compiler_options: dict[str, Any] | None = None):
    config = case.config
    self.case = case
    example_shape = images.shape[1:]
    model = families.model_from_config(config, example_shape)
    from ae_jax import feeds  # pylint: disable=g-import-not-at-top
    from ae_jax import step as step_lib  # pylint: disable=g-import-not-at-top

    make_opt = step_lib.make_optimizer(config)
    mesh = step_lib.make_mesh(case.members, mesh.devices.ravel())
    self.hp = jax.device_put(hparams.stack([hparams.from_config({**config.to_dict(), "seed": config.seed + i})
                                            for i in range(case.members)]), step_lib.member_sharding(mesh))
    optimizer_keys = json.dumps({k: config[k] for k in ("optimizer", "lr_schedule", "boundaries", "num_steps")})
    init = _initializer(model, example_shape, optimizer_keys, mesh, tuple((compiler_options or {}).items()))
    self.state = init(self.hp)
    if families.init_state(config):  # The family's state (TopK's counters), the same for every member.
      self.state = self.state.replace(model_state=jax.device_put(
          jax.tree.map(lambda x: np.broadcast_to(x, (case.members, *x.shape)), families.init_state(config)),
          step_lib.member_sharding(mesh)))
    self.macs = forward_macs(model, jax.tree.map(lambda x: x[0], self.state.params), example_shape)
    self.model = describe(config, example_shape)
    step_fn = step_lib.make_train_step(
        families.build(config, model, axis_name=step_lib.DATA), make_opt, mesh,
        dynamic_binarize=config.binarize == "dynamic", vectorize=case.vectorize)
    chunk = feeds.make_train_chunk(step_fn, num_examples=len(images), batch_size=config.batch_size,
                                   length=case.steps)
    self.images, self.labels, self.step = images, labels, np.int32(0)
    start = time.perf_counter()
    self.compiled = chunk.lower(self.state, self.hp, self.step, images, labels).compile(compiler_options)
    self.compile_s = time.perf_counter() - start
    memory = self.compiled.memory_analysis()
    self.peak_memory_bytes = None if memory is None else int(
        memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes - dataset_bytes)
    self.loss = float("nan")
    if warmup:
      self()

  def __call__(self) -> float:
    """Trains one chunk, fetches its metrics as the real loop does; returns the seconds it took."""
    start = time.perf_counter()
    self.state, metrics = self.compiled(self.state, self.hp, self.step, self.images, self.labels)
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - start
    self.step += self.case.steps
    self.loss = float(np.mean(metrics["loss"][-1]))
    return seconds


def make_matmul(size: int, mesh, min_seconds: float = 0.05) -> Callable[[], float]:
  """Returns a function that times chained float32 (size x size) matmuls on every device: FLOP/s.

  The chain is long enough to take `min_seconds`, so fast devices are not timing their dispatch.
  """
  n = mesh.devices.size
  sharding = NamedSharding(mesh, P(mesh.axis_names))
  a = jax.device_put(jax.random.normal(jax.random.key(0), (n, size, size), jnp.float32), sharding)
  b = jax.device_put(jax.random.normal(jax.random.key(1), (n, size, size), jnp.float32) / math.sqrt(size),
                     sharding)

  def chain(length: int) -> Callable[[], float]:
    fn = jax.jit(lambda a, b: lax.fori_loop(0, length, lambda _, x: x @ b, a), out_shardings=sharding)
    fn(a, b).block_until_ready()

    def flops_per_s() -> float:
      start = time.perf_counter()
      fn(a, b).block_until_ready()
      return 2 * n * size**3 * length / (time.perf_counter() - start)

    return flops_per_s

  once = chain(1)
  length = math.ceil(min_seconds * max(once() for _ in range(3)) / (2 * n * size**3))
  return once if length <= 1 else chain(length)


def _peak_bytes_in_use() -> int | None:
  stats = jax.devices()[0].memory_stats()
  return None if not stats or "peak_bytes_in_use" not in stats else int(stats["peak_bytes_in_use"])


class PlainRunner:
  """`Runner`'s interface for the hand-written loop (`plain_loop.PlainLoop`): one jit call per step."""

  def __init__(self, case: Case, images: jax.Array, warmup: bool = True):
    import plain_loop  # pylint: disable=g-import-not-at-top  # experiments/ is on sys.path.

    model = families.model_from_config(case.config, images.shape[1:])
    own = case.plain_model == "ae_jax"
    self.case, self.loop = case, plain_loop.PlainLoop(case.config, images, seed=case.config.seed,
                                                      model=model if own else None, losses="ae_jax" if own else "user")
    # ae_jax's model counts the useful multiply-adds (flax's transposed conv also multiplies zeros).
    self.macs = forward_macs(model, self.loop.params, images.shape[1:])
    self.model, self.peak_memory_bytes = describe(case.config, images.shape[1:]), None
    start = time.perf_counter()
    self.loss = self.loop.run(1)  # Compiles.
    self.compile_s = time.perf_counter() - start
    if warmup:
      self()

  def __call__(self) -> float:
    start = time.perf_counter()
    self.loss = self.loop.run(self.case.steps)
    return time.perf_counter() - start


def run_group(cases: Sequence[Case], images, labels, mesh, matmul: Callable[[], float],
              options: Options) -> list[dict[str, Any]]:
  """Times the group's cases round-robin, `repeats` rounds, re-timing the matmul before each round.

  Rounds alternate direction, so a case is timed as often just before its plain AE as just after.
  """
  runners = [PlainRunner(case, images, options.warmup) if case.plain else
             Runner(case, images, labels, mesh, images.nbytes + labels.nbytes, options.warmup,
                    FAST_COMPILE if options.fast_compile else None) for case in cases]
  repeats = options.repeats
  peaks, seconds = [], [[] for _ in runners]
  with jax.profiler.trace(options.profile_dir) if options.profile_dir else contextlib.nullcontext():
    for i in range(repeats):
      peaks.append(statistics.median(matmul() for _ in range(3)))
      for times, runner in list(zip(seconds, runners))[::1 if i % 2 == 0 else -1]:
        times.append(runner())
  plain = runners[0] if cases[0].encoder is not None else None
  hand_written = next((i for i, case in enumerate(cases) if case.plain), None)
  same_model = next((i for i, case in enumerate(cases) if case.plain and case.plain_model == "ae_jax"), None)
  results = []
  for runner, times in zip(runners, seconds):
    case, config = runner.case, runner.case.config
    step_times = [t / case.steps for t in times]
    bounds = [peak / (6 * runner.macs) for peak in peaks]
    examples = config.batch_size * case.members  # Per step, over all members.
    row = {
        "family": case.family,
        "batch_size": config.batch_size,
        "members": case.members,
        "model": runner.model,
        "examples_per_s": examples / statistics.median(step_times),
        "steps_per_s": 1 / statistics.median(step_times),
        "step_time_s": statistics.median(step_times),
        "peak_fraction": statistics.median(examples / t / b for t, b in zip(step_times, bounds)),
        "bound_examples_per_s": statistics.median(bounds),
        "macs_per_example": runner.macs,
        "matmul_gflops": statistics.median(peaks) / 1e9,
        "peak_memory_bytes": runner.peak_memory_bytes,
        "steps": case.steps,
        "repeats": repeats,
        "compile_s": runner.compile_s,
        "final_loss": runner.loss,
    }
    if case.plain:
      row["loop"] = "plain"
      row["plain_model"] = case.plain_model
    elif hand_written is not None:
      # > 1: ae_jax's loop is faster than the hand-written one, per round, then the median.
      row["vs_plain"] = statistics.median(p / case.steps / t for p, t in zip(seconds[hand_written], step_times))
      if same_model is not None:
        row["vs_plain_same_model"] = statistics.median(
            p / case.steps / t for p, t in zip(seconds[same_model], step_times))
    if case.encoder is not None:
      row["encoder"] = case.encoder
    if case.penalty_path is not None:
      plain_steps = [t / plain.case.steps for t in seconds[0]]
      row["penalty_path"] = case.penalty_path
      row["step_time_ratio"] = statistics.median(t / p for t, p in zip(step_times, plain_steps))
      if runner.peak_memory_bytes and plain.peak_memory_bytes:
        row["memory_ratio"] = runner.peak_memory_bytes / plain.peak_memory_bytes
    device_peak = _peak_bytes_in_use()
    if device_peak is not None:
      row["device_peak_bytes_in_use"] = device_peak
    results.append(row)
  return results


def load_images(options: Options) -> tuple[np.ndarray, np.ndarray]:
  """Training images (N, H, W, 1) float32 in [0, 1] and labels: random unless --dataset names data."""
  if options.dataset == "random":
    rng = np.random.default_rng(0)
    return (rng.random((options.num_examples, *EXAMPLE_SHAPE), np.float32),
            np.zeros(options.num_examples, np.int32))
  ds = data.load(options.dataset)
  return ds.train_images, ds.train_labels


def device_info(matmul_gflops: float, mesh) -> dict[str, Any]:
  device = jax.devices()[0]
  info = {"device": device.device_kind, "backend": jax.default_backend(), "num_devices": mesh.devices.size,
          "jax": jax.__version__, "matmul_gflops": matmul_gflops, "cpu_count": os.cpu_count()}
  if device.platform == "cpu":
    info["cpu"] = _cpu_model() or platform.processor() or platform.machine()
  return info


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
  except OSError:
    return ""


def run(options: Options, emit: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
  """Runs every case of `options`; `emit` sees each JSON object as soon as it exists. Returns them all."""
  groups = build_cases(options)
  images, labels = load_images(options)
  from ae_jax import step as step_lib  # pylint: disable=g-import-not-at-top

  mesh = step_lib.make_mesh()
  for batch in options.batch_sizes:
    if batch % mesh.devices.size or batch > len(images):
      raise config_lib.ConfigError(f"--batch_size={batch} must divide by the {mesh.devices.size} devices "
                                   f"and not exceed the {len(images)} training examples")
  replicated = NamedSharding(mesh, P())
  images, labels = jax.device_put(images, replicated), jax.device_put(labels, replicated)
  matmul = make_matmul(options.matmul_size, mesh)
  rows = [device_info(statistics.median(matmul() for _ in range(5)) / 1e9, mesh)]
  emit(rows[0])
  for cases in groups:
    for row in run_group(cases, images, labels, mesh, matmul, options):
      emit(row)
      rows.append(row)
  return rows


def options_from_flags() -> Options:
  """Options from the flags, failing in one line (exit 2) for values the benchmark cannot run."""
  families = list(FAMILIES) if _FAMILY.value == ["all"] else _FAMILY.value
  for name, values, allowed in (("family", families, FAMILIES), ("architecture", _ARCHITECTURE.value, ARCHITECTURES),
                                ("paths", _PATHS.value, PATHS),
                                ("encoders", _ENCODERS.value, tuple(ENCODERS))):
    bad = [v for v in values if v not in allowed]
    if bad:
      cli.fail(f"--{name}={','.join(bad)} is not one of: {', '.join(allowed)}")
  batch_sizes = tuple(cli.positive_ints("batch_size", _BATCH.value))
  for name, flag in (("steps", _STEPS), ("naive_steps", _NAIVE_STEPS), ("repeats", _REPEATS),
                     ("num_examples", _NUM_EXAMPLES), ("matmul_size", _MATMUL)):
    if flag.value < (0 if name == "steps" else 1):
      cli.fail(f"--{name}={flag.value} must be positive")
  options = Options(
      families=tuple(families), architectures=tuple(_ARCHITECTURE.value), batch_sizes=batch_sizes, paths=tuple(_PATHS.value),
      encoders=tuple(_ENCODERS.value), steps=_STEPS.value, naive_steps=_NAIVE_STEPS.value,
      naive_max_batch=_NAIVE_MAX_BATCH.value, repeats=_REPEATS.value, num_examples=_NUM_EXAMPLES.value,
      dataset=_DATASET.value, matmul_size=_MATMUL.value, profile_dir=_PROFILE.value)
  if _QUICK.value:
    options = dataclasses.replace(options, **QUICK)
  return options


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --family=vae --batch_size=128")
  options = options_from_flags()
  with cli.json_lines(_OUT.value) as emit, cli.clear_errors():
    run(options, emit)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
