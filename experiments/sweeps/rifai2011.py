"""AE, DAE (masking 25%) and CAE (weight 0.1) of Rifai et al. (2011), one member each.

  python experiments/sweep.py --config=experiments/configs/reproduce/rifai2011.py \
      --sweep_file=experiments/sweeps/rifai2011.py --config.dataset=npz:mnist.npz --workdir=runs/rifai2011

The families have different structures, so the three train one after another (one program each).
"""

from ae_jax import sweep_spec


def get_sweep():
  return sweep_spec.product(family=["undercomplete", "denoising", "contractive"])
