"""CPU-tiny config for tests: a few steps of a small MLP.

  python experiments/train.py --config=experiments/configs/test.py --config.family=vae --workdir=/tmp/ae
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs


def get_config():
  c = default.get_config()
  c.widths = (16,)
  c.latent_dim = 4
  c.batch_size = 32
  c.num_steps = 40
  c.log_every = 10
  c.eval_every = 20
  c.checkpoint_every = 20
  c.num_pictures = 4
  c.iwae_samples = 20
  return c
