"""Denoising AE: 25% masking noise on the inputs, loss against the clean image.

  python experiments/train.py --config=experiments/configs/denoising.py --workdir=runs/denoising
  # Gaussian noise instead: --config.noise=gaussian --config.noise_level=0.3
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs


def get_config():
  c = default.get_config()
  c.family = "denoising"
  c.latent_dim = 32
  c.noise = "masking"
  c.noise_level = 0.25
  return c
