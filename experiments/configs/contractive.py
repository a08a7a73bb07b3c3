"""Contractive AE (Rifai et al. 2011): a sigmoid code with the exact ||dz/dx||_F^2 penalty.

  python experiments/train.py --config=experiments/configs/contractive.py --workdir=runs/contractive
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs


def get_config():
  c = default.get_config()
  c.family = "contractive"
  c.widths = ()
  c.latent_dim = 32
  c.code_activation = "sigmoid"
  c.contractive_weight = 0.1
  c.contractive_path = "auto"
  return c
