"""Hinton & Salakhutdinov (2006), MNIST: the deep autoencoder 784-1000-500-250-30 against PCA-30.

  python experiments/train.py --config=experiments/configs/reproduce/hinton2006.py \
      --config.dataset=npz:mnist.npz --workdir=runs/hinton2006

The paper reports a test squared error per image of 3.00 for the autoencoder and 13.87 for PCA with
30 components (eval.json: `sse` and `pca_sse`). How this differs from the paper: no RBM pretraining
and no conjugate-gradient fine-tuning; Adam with a warmup + cosine schedule from random (Glorot)
initialisation, ReLU hidden units instead of logistic ones, a linear 30-unit code, the Bernoulli
cross-entropy on grey pixels as the paper's fine-tuning used, and 50 epochs at batch 128.
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs


def get_config():
  c = default.get_config()
  c.family = "undercomplete"
  c.dataset = "mnist"  # Or npz:PATH to a Keras-layout MNIST.
  c.widths = (1000, 500, 250)
  c.latent_dim = 30
  c.activation = "relu"
  c.code_activation = "linear"
  c.kernel_init = "glorot_uniform"
  c.init_output_bias = "data_mean"
  c.reconstruction = "bernoulli"
  c.learning_rate = 1e-3
  c.lr_schedule = "warmup_cosine"
  c.warmup_steps = 500
  c.num_epochs = 50
  c.batch_size = 128
  c.log_every = 500
  c.eval_every = 5000
  c.checkpoint_every = 5000
  return c
