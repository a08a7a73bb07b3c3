"""benchmarks/profile_step.py: kernels are charged to the step's parts; --quick runs end to end."""

import json

from absl.testing import flagsaver

from ae_jax import cli
from benchmarks import profile_step

HLO = """\
%fused_computation.1 (param_0: f32[8,4], param_1: f32[4,2]) -> f32[8,2] {
  %param_0 = f32[8,4]{1,0} parameter(0)
  ROOT %dot.3 = f32[8,2]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(chunk)/while/body/loss_and_grad/jvp(VAE.decode)/dot_general"}
}

%fused_computation.2 (param_0.1: f32[8,4]) -> f32[] {
  %square.1 = f32[8,4]{1,0} multiply(%param_0.1, %param_0.1), metadata={op_name="jit(chunk)/while/body/norms/square"}
  ROOT %reduce.1 = f32[] reduce(%square.1, %c), dimensions={0,1}, to_apply=%add
}

ENTRY %main.1 (p: f32[8,4]) -> f32[8,2] {
  %ynn_fusion.1 = f32[8,2]{1,0} fusion(%p, %w), kind=kCustom, calls=%fused_computation.1, metadata={op_name="jit(chunk)/while/body/loss_and_grad/jvp(VAE.decode)/dot_general"}
  %ynn_fusion.2 = f32[] fusion(%p), kind=kCustom, calls=%fused_computation.2
  %exp_fusion = f32[8,4]{1,0} fusion(%p), kind=kLoop, calls=%fused_computation.3, metadata={op_name="jit(step)/loss_and_grad/jvp(jit(softplus))/exp"}
  %multiply_add_fusion.4 = f32[8,4]{1,0} fusion(%p), kind=kLoop, calls=%fused_computation.4, metadata={op_name="jit(chunk)/while/body/closed_call/optimizer/add"}
  %copy.7 = f32[8,4]{0,1} copy(%p)
  %while.2 = (s32[], f32[8,4]) while(%t), condition=%cond, body=%body
}
"""


def test_kernels_are_charged_to_their_scope_and_matmuls_found_inside_fusions():
  table = profile_step.kernel_table(HLO)
  parts = {name: profile_step.part_of(op_name, is_matmul) for name, (_, op_name, is_matmul) in table.items()}
  assert parts["ynn_fusion.1"] == "matmul"  # A fusion around a dot.
  assert parts["ynn_fusion.2"] == "norms"  # No name of its own: its computation's stands in.
  assert parts["exp_fusion"] == "loss_and_grad_other"
  assert parts["multiply_add_fusion.4"] == "optimizer"
  assert parts["copy.7"] == "unscoped"
  assert table["while.2"][0] in profile_step.CONTAINERS  # Not summed: its body's kernels are.
  assert profile_step.part_of("jit(step)/batch_norms/x", False) == "unscoped"  # Whole names only.


def test_quick_run_profiles_both_loops(capsys):
  with flagsaver.flagsaver():
    argv = cli.parse_flags(["profile_step.py", "--quick", "--family=vae"])
    profile_step.main(argv)
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
  assert [(row["loop"], row.get("plain_model"), row.get("plain_layout")) for row in rows] == [
      ("ae_jax", None, None), ("plain", "flax", "flat"), ("plain", "flax", "images"), ("plain", "ae_jax", "images")]
  ours, plain, _, _ = rows
  assert ours["loop_form"] == "scan"  # config.loop=auto (feeds.resolve_loop).
  assert ours["wall_ms_per_step"] > 0 and ours["kernel_ms_per_step"] > 0
  assert {"matmul", "optimizer", "norms"} <= set(ours["parts_ms_per_step"])  # The named scopes are traced.
  assert {"matmul", "optimizer"} <= set(plain["parts_ms_per_step"]) and "norms" not in plain["parts_ms_per_step"]
  assert ours["top_kernels"] and ours["matmul_gflops"] > 0
