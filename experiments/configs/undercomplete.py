"""Undercomplete AE: an 8-unit bottleneck on the 64-pixel digits.

  python experiments/train.py --config=experiments/configs/undercomplete.py --workdir=runs/undercomplete
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs


def get_config():
  return default.get_config()
