"""Sparse AE: an overcomplete sigmoid code (128 units > 64 pixels) with a KL sparsity penalty.

  python experiments/train.py --config=experiments/configs/sparse.py --workdir=runs/sparse
  # L1 instead of KL: add --config.sparsity=l1 --config.code_activation=relu
  # TopK (16 of 128 units active) with AuxK: add --config.sparsity=topk --config.code_activation=linear
"""

from configs import default  # experiments/ is on sys.path when train.py runs


def get_config():
  c = default.get_config()
  c.family = "sparse"
  c.latent_dim = 128
  c.code_activation = "sigmoid"
  c.sparsity = "kl"
  c.sparsity_weight = 0.1
  c.rho = 0.05
  return c
