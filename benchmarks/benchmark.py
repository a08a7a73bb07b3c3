"""Training throughput of every family, against a matmul-peak bound measured in the same run.

  python -m benchmarks.benchmark                                  # every case, batch 128 and 1024
  python -m benchmarks.benchmark --family=vae --batch_size=128
  python -m benchmarks.benchmark --family=contractive --encoders=A --paths=mlp,stochastic
  python -m benchmarks.benchmark --architecture=conv --family=undercomplete --batch_size=128
  python -m benchmarks.benchmark --quick                          # CI: runs every case tiny, no speed

Each case trains with the real loop: the program `ae_jax.program.build` assembles for training (the
family config's model, loss, optimizer and initial state), and its device feed's chunk (on-device
shuffling, the fused scan, every metric of the step, metrics fetched to the host after each call) on
MNIST-shaped images, random by default. After compiling and one warm-up call, it times `--repeats`
calls of `--steps` steps each and reports medians; stdout gets one JSON object per line: first the
device, then one per case.

The bound: `matmul_gflops` is a large float32 matmul timed in the same process; a training step of
an MLP costs about 6 x (multiply-accumulates of the forward pass) FLOPs per example (2 forward,
4 backward), so `bound_examples_per_s = matmul_flops / (6 * macs_per_example)` and
`peak_fraction = examples_per_s / bound_examples_per_s`. The contractive penalty's own FLOPs are not
counted: its peak_fraction is against the plain AE's bound. Cases are timed round-robin
(`harness.round_robin`): the matmul is re-timed before every round of calls, and fractions and
ratios are medians of per-round values, so load from other processes that slows one round slows both
sides of its ratio.

Every non-contractive case is timed round-robin with two hand-written loops (benchmarks/plain_loop.py):
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
import math
import statistics
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from ae_jax import cli
from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import families
from ae_jax import feeds
from ae_jax import hparams
from ae_jax import program as program_lib
from ae_jax import step as step_lib
from benchmarks import harness

# The registry's families, contractive last: its groups are the slow ones, each against its own plain AE.
FAMILIES = tuple(sorted(families.NAMES, key=lambda name: name == "contractive"))
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

# Also harness's --batch_size, --steps, --repeats, --num_examples, --quick and --out.
_FAMILY = flags.DEFINE_list("family", ["all"], f"Families to run, or 'all': {', '.join(FAMILIES)}.")
_ARCHITECTURE = flags.DEFINE_list("architecture", ["mlp"], "Models: mlp (the families' MLPs and the "
                                  "contractive encoders), conv (conv (32, 64), not contractive).")
_PATHS = flags.DEFINE_list("paths", list(PATHS), "Contractive penalty paths.")
_ENCODERS = flags.DEFINE_list("encoders", list(ENCODERS), "Contractive encoders: A (784-1000 sigmoid), "
                              "B (784-400-32 ReLU).")
_NAIVE_STEPS = flags.DEFINE_integer("naive_steps", 1, "Steps per timed call of the jacfwd/jacrev paths.")
_NAIVE_MAX_BATCH = flags.DEFINE_integer(
    "naive_max_batch", 128, "Run the naive jacfwd/jacrev paths only up to this batch size (0: never).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Side of the square float32 matmul that sets the peak.")
_LOOP = flags.DEFINE_list("loop", ["auto"], "ae_jax's loop forms (config.loop), each timed as its own case: "
                          "auto, scan, step.")
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
  loops: Sequence[str] = ("auto",)  # ae_jax's loop forms, each its own case (config.loop).


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
  plain: bool = False  # The hand-written loop of benchmarks/plain_loop.py instead of ae_jax's.
  # The plain loop's parts: "flax", as a user writes them (flax's conv layers, optax's losses), or
  # "ae_jax", ae_jax's own layers and loss terms (the loop alone differs).
  plain_model: str = "flax"
  # The user's batches: "flat" (MLP: flattened at input, as Flax's examples/vae) or "images".
  plain_layout: str = "images"
  loop: str = "auto"  # ae_jax's loop form (config.loop): auto, scan or step.

  @property
  def family(self) -> str:
    return self.config.family


# Families timed per penalty path against the plain AE of the same encoder (ENCODERS), not against the
# hand-written loop.
PENALTY_PATH_FAMILIES = ("contractive",)


def _against_plain(config, steps: int, loops: Sequence[str]) -> list[Case]:
  """ae_jax's case in each loop form, then the plain loops: as a user writes it (flattened for an MLP,
  as Flax's example; image-shaped too), and with ae_jax's parts."""
  ours = [Case(config, steps, loop=loop) for loop in loops]
  users = [Case(config, steps, plain=True, plain_layout=layout)
           for layout in (("flat", "images") if config.architecture == "mlp" else ("images",))]
  return ours + users + [Case(config, steps, plain=True, plain_model="ae_jax")]


def build_cases(options: Options) -> list[list[Case]]:
  """Groups of cases timed round-robin: a family alone, or a plain AE with its contractive paths."""
  config_of = harness.family_config
  groups = []
  for batch in options.batch_sizes:
    steps = options.steps or max(2, 4096 // batch)
    if "conv" in options.architectures:
      conv_steps = options.steps or max(2, CONV_STEPS // batch)
      for family in options.families:
        if family not in PENALTY_PATH_FAMILIES:
          groups.append(_against_plain(config_of(family, batch, **CONV_SHAPE), conv_steps, options.loops))
    if "mlp" not in options.architectures:
      continue
    for family in options.families:
      if family not in PENALTY_PATH_FAMILIES:
        groups.append(_against_plain(config_of(family, batch, **MLP_SHAPE), steps, options.loops))
        continue
      for name in options.encoders:
        # The slow naive paths last, so the fast ones are timed right next to their plain AE.
        paths = [p for p in options.paths if p not in NAIVE_PATHS]
        paths += [p for p in options.paths if p in NAIVE_PATHS and batch <= options.naive_max_batch]
        if not paths:
          continue
        group = [Case(config_of("undercomplete", batch, **ENCODERS[name]), steps, encoder=name)]
        for path in paths:
          config = config_of("contractive", batch, contractive_path=path, **ENCODERS[name])
          group.append(Case(config, options.naive_steps if path in NAIVE_PATHS else steps, name, path))
        groups.append(group)
  return groups


def forward_macs(model, params, example_shape: Sequence[int]) -> int:
  """Multiply-accumulates per example of encode + decode (both VAE heads; no loss, no penalty)."""
  x = jnp.zeros((1, *example_shape), jnp.float32)

  def forward(params, x):
    code = model.apply({"params": params}, x, method="encode")
    z = code[0] if isinstance(code, tuple) else code
    return code, model.apply({"params": params}, z, method="decode")

  return harness.count_macs(jax.make_jaxpr(forward)(params, x).jaxpr)


def describe(config, example_shape: Sequence[int]) -> str:
  """The encoder, e.g. 'mlp 784-400(relu)-20(linear)'; the decoder mirrors it."""
  code = "gaussian" if families.get(config.family).variational else config.code_activation
  layers = [f"{w}({config.activation})" for w in config.widths] + [f"{config.latent_dim}({code})"]
  return f"{config.architecture} {'-'.join([str(math.prod(example_shape)), *layers])}"


def member_hparams(config, members: int) -> list[hparams.HParams]:
  """The hyperparameters of `members` runs of `config` with seeds seed, seed + 1, ..."""
  return [hparams.from_config({**config.to_dict(), "seed": config.seed + i}) for i in range(members)]


class Runner:
  """One case's program, assembled as training assembles it (`program.build`), and its state; each call
  trains one chunk of `case.steps` steps, the device feed's own chunk, compiled ahead."""

  def __init__(self, case: Case, dataset: data.Dataset, *, devices=None, warmup: bool = True,
               compiler_options: dict[str, Any] | None = None):
    self.case = case
    self.program = program_lib.build(case.config, dataset, member_hparams(case.config, case.members),
                                     devices=devices, vectorize=case.vectorize, placement="device",
                                     loop=case.loop, compiler_options=compiler_options)
    self.state, self.hp, feed = self.program.init_state(), self.program.hp, self.program.feed
    example_shape = dataset.example_shape
    self.macs = forward_macs(self.program.model, jax.tree.map(lambda x: x[0], self.state.params), example_shape)
    self.model, self.loop = describe(case.config, example_shape), feed.loop
    self.feed, self.step = feed, 0
    start = time.perf_counter()
    self.compiled = feed.compile(self.state, self.hp, case.steps, compiler_options)
    self.compile_s = time.perf_counter() - start
    self.images, self.labels = feed.images, feed.labels
    memory = self.compiled.memory_analysis()
    self.peak_memory_bytes = None if memory is None else int(
        memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes - self.images.nbytes - self.labels.nbytes)
    self.loss = float("nan")
    if warmup:
      self()

  def __call__(self) -> float:
    """Trains one chunk, fetches its metrics as the real loop does; returns the seconds it took."""
    start = time.perf_counter()
    self.state, metrics = self.feed.run(self.state, self.hp, self.step, self.case.steps)
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - start
    self.step += self.case.steps
    self.loss = float(np.mean(metrics["loss"][-1]))
    return seconds


class PlainRunner:
  """`Runner`'s interface for the hand-written loop (`plain_loop.PlainLoop`): one jit call per step."""

  def __init__(self, case: Case, images: jax.Array, warmup: bool = True):
    from benchmarks import plain_loop  # pylint: disable=g-import-not-at-top

    model = families.model_from_config(case.config, images.shape[1:])
    own = case.plain_model == "ae_jax"
    self.case, self.loop = case, plain_loop.PlainLoop(case.config, images, seed=case.config.seed,
                                                      model=model if own else None, losses="ae_jax" if own else "user",
                                                      layout=case.plain_layout)
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


def make_runners(cases: Sequence[Case], dataset: data.Dataset, options: Options) -> list[Runner | PlainRunner]:
  """Compiled and warmed-up runners of `cases`; the plain loops share one copy of the images."""
  plain_images = None
  if any(case.plain for case in cases):
    plain_images = jax.device_put(dataset.train_images, NamedSharding(step_lib.make_mesh(), P()))
  compiler_options = FAST_COMPILE if options.fast_compile else None
  return [PlainRunner(case, plain_images, options.warmup) if case.plain else
          Runner(case, dataset, warmup=options.warmup, compiler_options=compiler_options) for case in cases]


def run_group(cases: Sequence[Case], dataset: data.Dataset, matmul: Callable[[], float],
              options: Options) -> list[dict[str, Any]]:
  """Times the group's cases round-robin (`harness.round_robin`), `options.repeats` rounds."""
  runners = make_runners(cases, dataset, options)
  repeats = options.repeats
  with jax.profiler.trace(options.profile_dir) if options.profile_dir else contextlib.nullcontext():
    seconds, peaks = harness.round_robin(runners, repeats, matmul=matmul)
  plain = runners[0] if cases[0].encoder is not None else None
  users = [i for i, case in enumerate(cases) if case.plain and case.plain_model == "flax"]
  hand_written = users[0] if users else None  # The user's loop: flattened for an MLP.
  images_layout = next((i for i in users[1:] if cases[i].plain_layout == "images"), None)
  same_model = next((i for i, case in enumerate(cases) if case.plain and case.plain_model == "ae_jax"), None)
  scans = {(c.members, c.vectorize): i for i, (c, r) in enumerate(zip(cases, runners))
           if not c.plain and getattr(r, "loop", "") == "scan"}  # The same program as a scan.
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
      row["plain_layout"] = case.plain_layout
    else:
      row["loop_form"] = runner.loop  # scan or step (config.loop)
      scan = scans.get((case.members, case.vectorize))
      if runner.loop == "step" and scan is not None:  # > 1: the step loop is faster, per round, then the median.
        row["vs_scan"] = harness.median_ratio([p / cases[scan].steps for p in seconds[scan]], step_times)
    if not case.plain and hand_written is not None:
      # > 1: ae_jax's loop is faster than the hand-written one, per round, then the median.
      row["vs_plain"] = harness.median_ratio([p / case.steps for p in seconds[hand_written]], step_times)
      if images_layout is not None:
        row["vs_plain_images"] = harness.median_ratio([p / case.steps for p in seconds[images_layout]], step_times)
      if same_model is not None:
        row["vs_plain_same_model"] = harness.median_ratio([p / case.steps for p in seconds[same_model]], step_times)
    if case.encoder is not None:
      row["encoder"] = case.encoder
    if case.penalty_path is not None:
      row["penalty_path"] = case.penalty_path
      row["step_time_ratio"] = harness.median_ratio(step_times, [t / plain.case.steps for t in seconds[0]])
      if runner.peak_memory_bytes and plain.peak_memory_bytes:
        row["memory_ratio"] = runner.peak_memory_bytes / plain.peak_memory_bytes
    device_peak = harness.peak_bytes_in_use()
    if device_peak is not None:
      row["device_peak_bytes_in_use"] = device_peak
    results.append(row)
  return results


def load_dataset(options: Options) -> data.Dataset:
  """Training images (N, H, W, 1) float32 in [0, 1] and labels: random unless --dataset names data."""
  if options.dataset != "random":
    return data.load(options.dataset)
  images, labels = harness.random_images(options.num_examples), np.zeros(options.num_examples, np.int32)
  return data.Dataset(images, labels, images[:0], labels[:0], "random")


def run(options: Options, emit: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
  """Runs every case of `options`; `emit` sees each JSON object as soon as it exists. Returns them all."""
  groups = build_cases(options)
  dataset = load_dataset(options)
  mesh = step_lib.make_mesh()
  for batch in options.batch_sizes:
    if batch % mesh.devices.size or batch > len(dataset.train_images):
      raise config_lib.ConfigError(f"--batch_size={batch} must divide by the {mesh.devices.size} devices "
                                   f"and not exceed the {len(dataset.train_images)} training examples")
  matmul = harness.make_matmul(options.matmul_size, mesh)
  rows = [harness.device_info(matmul_gflops=statistics.median(matmul() for _ in range(5)) / 1e9)]
  emit(rows[0])
  for cases in groups:
    for row in run_group(cases, dataset, matmul, options):
      emit(row)
      rows.append(row)
  return rows


def options_from_flags() -> Options:
  """Options from the flags, failing in one line (exit 2) for values the benchmark cannot run."""
  names = list(FAMILIES) if _FAMILY.value == ["all"] else _FAMILY.value
  for name, values, allowed in (("family", names, FAMILIES), ("architecture", _ARCHITECTURE.value, ARCHITECTURES),
                                ("loop", _LOOP.value, feeds.LOOPS),
                                ("paths", _PATHS.value, PATHS), ("encoders", _ENCODERS.value, tuple(ENCODERS))):
    bad = [v for v in values if v not in allowed]
    if bad:
      cli.fail(f"--{name}={','.join(bad)} is not one of: {', '.join(allowed)}")
  batch_sizes = tuple(harness.positive_ints("batch_size", harness.BATCH_SIZE.value))
  for name, flag in (("naive_steps", _NAIVE_STEPS), ("matmul_size", _MATMUL)):
    if flag.value < 1:
      cli.fail(f"--{name}={flag.value} must be positive")
  options = Options(
      families=tuple(names), architectures=tuple(_ARCHITECTURE.value), batch_sizes=batch_sizes,
      paths=tuple(_PATHS.value), encoders=tuple(_ENCODERS.value), steps=harness.STEPS.value,
      naive_steps=_NAIVE_STEPS.value, naive_max_batch=_NAIVE_MAX_BATCH.value, repeats=harness.REPEATS.value,
      num_examples=harness.NUM_EXAMPLES.value, dataset=harness.DATASET.value, matmul_size=_MATMUL.value,
      profile_dir=_PROFILE.value, loops=tuple(_LOOP.value))
  if harness.QUICK.value:
    options = dataclasses.replace(options, **QUICK)
  return options


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --family=vae --batch_size=128")
  options = options_from_flags()
  with harness.json_lines(harness.OUT.value) as emit, cli.clear_errors():
    run(options, emit)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
