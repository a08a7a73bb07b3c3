"""Sparse AE: an overcomplete sigmoid code (128 units > 64 pixels) with a KL sparsity penalty.

  python experiments/train.py --config=experiments/configs/sparse.py --workdir=runs/sparse
  # L1 instead of KL: add --config.sparsity=l1 --config.code_activation=relu
  # TopK (16 of 128 units active) with AuxK: add --config.sparsity=topk --config.code_activation=linear
  # --config.widths='()' (a linear encoder, as Gao et al.'s; with the hidden ReLU layer 5-39% of the
  # units end up dead on MNIST, their pre-activations below 0 for every image, out of AuxK's reach)

sparsity_weight = 5: on MNIST (17 epochs) the test split's mean activation is then 0.057 for
rho = 0.05; the former 0.1 left it at 0.21, and UFLDL's beta = 3 at 0.062 (its reconstruction term
is a mean squared error, smaller than this Bernoulli cross-entropy summed over pixels).
`experiments/configs/reproduce/sparse_mnist.py` has the measured settings.
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs


def get_config():
  c = default.get_config()
  c.family = "sparse"
  c.latent_dim = 128
  c.code_activation = "sigmoid"
  c.sparsity = "kl"
  c.sparsity_weight = 5.0
  c.rho = 0.05
  return c
