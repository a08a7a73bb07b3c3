"""Variational AE: Gaussian q(z|x), Bernoulli p(x|z), negative ELBO with a beta on the KL.

  python experiments/train.py --config=experiments/configs/vae.py --workdir=runs/vae
  # MNIST, as in Kingma & Welling: --config.dataset=mnist --config.widths='(400,)' --config.latent_dim=20
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs


def get_config():
  c = default.get_config()
  c.family = "vae"
  c.widths = (128,)
  c.latent_dim = 8
  c.beta = 1.0
  return c
