"""Undercomplete AE: an 8-unit bottleneck on the 64-pixel digits.

  python experiments/train.py --config=experiments/configs/undercomplete.py --workdir=runs/undercomplete
"""

from configs import default  # experiments/ is on sys.path when train.py runs


def get_config():
  return default.get_config()
