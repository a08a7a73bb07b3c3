"""Where a training step's time goes, op by op: ae_jax's loop against the plain loop, from a profile.

  python -m benchmarks.profile_step --family=vae --batch_size=128
  python -m benchmarks.profile_step --family=all --batch_size=128,1024 --out=profile.jsonl
  python -m benchmarks.profile_step --quick                      # CI: tiny, checks that it runs

It takes benchmark.py's flags (--family, --batch_size, --steps, --dataset, --quick, --out; contractive
cases are skipped) and `--calls`.

Each loop of a benchmark.py group (ae_jax's real chunk, `benchmark.Runner`'s; the plain loop as a
user writes it; and the plain loop with ae_jax's layers and loss terms, `plain_model: ae_jax`) is
compiled and warmed up, then `--calls` of its calls are traced with `jax.profiler` (Perfetto JSON),
one loop after another (not interleaved: compare parts within a loop, and loops only on an idle
machine). XLA records one
event per executed kernel (a fusion, a dot, a copy); each kernel is looked up in the compiled HLO and
its time is charged to a part of the step:
- the named scope it was traced under: `batch` (permutation and gather), `draws` (binarization and
  keys), `loss_and_grad`, `optimizer`, `norms` (the three logged l2 norms), `divergence_guard`;
- `loss_and_grad` is split into `matmul` (dots and the fusions built around them) and the rest,
  `loss_and_grad_other` (activations, the loss, its derivatives, random draws);
- `unscoped`: kernels outside every scope (the scan's bookkeeping, stacking the metrics).
One JSON object per loop: `wall_ms_per_step`, `kernel_ms_per_step` (the kernels' summed time; above
the wall time where kernels ran on several threads at once), the part table `parts_ms_per_step`,
the ten most expensive kernels, and `matmul_gflops`: 6 x the forward multiply-adds per step over
the `matmul` kernels' time, the rate the step's matmuls ran at.
"""

import collections
from collections.abc import Sequence
import dataclasses
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Any

from absl import app
from absl import flags
import jax

from ae_jax import cli
from benchmarks import benchmark
from benchmarks import harness

SCOPES = ("batch", "draws", "loss_and_grad", "optimizer", "norms", "divergence_guard")
CONTAINERS = ("while", "call", "conditional")  # Their kernels are traced themselves.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][a-z\-]*)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')

_CALLS_FLAG = flags.DEFINE_integer("calls", 3, "Traced calls per loop (benchmark.py's other flags apply).",
                                  lower_bound=1)


def kernel_table(hlo_text: str) -> dict[str, tuple[str, str, bool]]:
  """Compiled HLO text -> {instruction: (opcode, op_name, is_matmul)}: a dot or convolution, or a fusion
  whose computation holds one."""
  current, holds_dot, rows, inner_names = None, set(), {}, {}
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, opcode = match.groups()
    if opcode in ("dot", "convolution"):
      holds_dot.add(current)
    calls = _CALLS.search(line)
    op_name = _OP_NAME.search(line)
    rows[name] = (opcode, calls.group(1) if calls else "", op_name.group(1) if op_name else "")
    if op_name:  # A fusion's root may have none (XLA's rewrites); its computation's first name stands in.
      inner_names.setdefault(current, op_name.group(1))
  return {name: (opcode, op_name or inner_names.get(called, ""),
                 opcode in ("dot", "convolution") or (opcode == "fusion" and called in holds_dot))
          for name, (opcode, called, op_name) in rows.items()}


def part_of(op_name: str, is_matmul: bool) -> str:
  """The step's part a kernel belongs to (see the module docstring)."""
  for scope in SCOPES:
    if re.search(rf"(^|[/(]){scope}($|[/)])", op_name):
      if scope == "loss_and_grad":
        return "matmul" if is_matmul else "loss_and_grad_other"
      return scope
  return "unscoped"


def read_trace(trace_dir: str) -> list[dict[str, Any]]:
  """The complete ('X') events of the Perfetto trace jax.profiler wrote under `trace_dir`."""
  files = glob.glob(os.path.join(trace_dir, "**", "*perfetto_trace.json.gz"), recursive=True)
  if not files:
    raise RuntimeError(f"jax.profiler wrote no Perfetto trace under {trace_dir}")
  with gzip.open(max(files, key=os.path.getmtime)) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  return [e for e in events if e.get("ph") == "X"]


def profile(runner, hlo_text: str, steps: int, calls: int, matmul_flops: float) -> dict[str, Any]:
  """Traces `calls` calls of `runner` (each `steps` steps) and charges every kernel to a part."""
  table = kernel_table(hlo_text)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      wall = sum(runner() for _ in range(calls))
    events = read_trace(trace_dir)
  total_steps = steps * calls
  per_kernel, parts = collections.Counter(), collections.Counter()
  for event in events:
    kernel = table.get(event["name"])
    if kernel is None or kernel[0] in CONTAINERS:
      continue
    _, op_name, is_matmul = kernel
    per_kernel[event["name"]] += event.get("dur", 0.0)
    parts[part_of(op_name, is_matmul)] += event.get("dur", 0.0)
  to_ms = lambda us: round(us / 1000 / total_steps, 4)
  return {
      "wall_ms_per_step": round(wall * 1000 / total_steps, 4),
      "kernel_ms_per_step": to_ms(sum(parts.values())),
      "parts_ms_per_step": {part: to_ms(us) for part, us in parts.most_common()},
      "top_kernels": [{"kernel": name, "ms_per_step": to_ms(us), "opcode": table[name][0],
                       "op_name": table[name][1].split("/", 2)[-1][-120:]}
                      for name, us in per_kernel.most_common(10)],
      "matmul_gflops": (round(matmul_flops * total_steps / (parts["matmul"] * 1e-6) / 1e9, 2)
                        if parts["matmul"] else None),
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --family=vae --batch_size=128")
  options = dataclasses.replace(benchmark.options_from_flags(), fast_compile=False)
  dataset = benchmark.load_dataset(options)
  calls = 1 if harness.QUICK.value else _CALLS_FLAG.value
  with harness.json_lines(harness.OUT.value) as emit, cli.clear_errors():
    for group in benchmark.build_cases(dataclasses.replace(options, architectures=("mlp",))):
      if group[0].encoder:
        continue  # Contractive cases compare with a plain AE of ae_jax's own; benchmark.py times them.
      for case, runner in zip(group, benchmark.make_runners(group, dataset, options)):
        if case.plain:
          loop = runner.loop
          hlo = loop.step.lower(loop.params, loop.opt_state, loop.images, loop.perm, 0, loop.key).compile().as_text()
        else:
          hlo = runner.compiled.as_text()
        matmul_flops = 6.0 * runner.macs * case.config.batch_size  # Forward and backward, per step.
        row = profile(runner, hlo, case.steps, calls, matmul_flops)
        emit({"loop": "plain" if case.plain else "ae_jax",
              **({"plain_model": case.plain_model, "plain_layout": case.plain_layout} if case.plain
                 else {"loop_form": runner.loop}),
              "family": case.family, "batch_size": case.config.batch_size, "model": runner.model, **row})


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
