"""Sparse AE: an overcomplete sigmoid code (128 units > 64 pixels) with a KL sparsity penalty.

  python experiments/train.py --config=experiments/configs/sparse.py --workdir=runs/sparse
  # L1 instead of KL: add --config.sparsity=l1 --config.code_activation=relu (sparsity_weight follows the kind)
  # TopK (16 of 128 units active) with AuxK: add --config.sparsity=topk --config.code_activation=linear
  # --config.widths='()' (a linear encoder, as Gao et al.'s; with the hidden ReLU layer 5-39% of the
  # units end up dead on MNIST, their pre-activations below 0 for every image, out of AuxK's reach)

sparsity_weight = 5: on MNIST (17 epochs) the test split's mean activation is then 0.057 for
rho = 0.05; the former 0.1 left it at 0.21, and UFLDL's beta = 3 at 0.062 (its reconstruction term
is a mean squared error, smaller than this Bernoulli cross-entropy summed over pixels).
`experiments/configs/reproduce/sparse_mnist.py` has the measured settings.

sparsity_weight follows --config.sparsity until it is set itself (WEIGHTS): the KL's 5 on an L1 ReLU
code leaves 88% of the units dead and the reconstructions at the mean image. L1's 0.01: on the digits
(3000 steps, seeds 0-2) 13-16% of the 128 units dead on the test split, ~62 of them on per image,
linear probe 97-98%; 0.03 leaves 20% dead, 0.1 34%, 0.3 75% (`python experiments/sweep.py
--config=experiments/configs/sparse.py --config.sparsity=l1 --config.code_activation=relu
--sweep='sparsity_weight=0.003,0.01,0.03,0.1,0.3,1,5' --config.evaluate=quick`, the 2-core CPU VM).
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs

WEIGHTS = {"kl": 5.0, "l1": 0.01, "topk": 5.0}  # TopK reads no weight (5: what it always recorded).


def weight_for(sparsity: str) -> float:
  """The sparsity_weight of a sparsity kind (an unknown kind is refused by validation, not here)."""
  return WEIGHTS.get(sparsity, WEIGHTS["kl"])


def get_config():
  c = default.get_config()
  c.family = "sparse"
  c.latent_dim = 128
  c.code_activation = "sigmoid"
  c.sparsity = "kl"
  # A lazy reference: --config.sparsity=l1 changes it, --config.sparsity_weight=X replaces it.
  c.sparsity_weight = c.get_ref("sparsity")._apply_op(weight_for).to_float()  # pylint: disable=protected-access
  c.rho = 0.05
  return c
