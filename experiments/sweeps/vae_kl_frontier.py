"""The VAE's rate-distortion frontier by set points: 8 KL targets, beta adapted per member (README, "Set points").

  python experiments/sweep.py --config=experiments/configs/vae.py --config.kl_target=1 \
      --sweep_file=experiments/sweeps/vae_kl_frontier.py --workdir=runs/vae_kl_frontier

On MNIST as in the README's measurement, add --config.dataset=npz:mnist.npz --config.widths='(400,)'
--config.latent_dim=20. The frontier: runs/vae_kl_frontier/frontier.md and frontier.png.
"""

from ae_jax import sweep_spec


def get_sweep():
  return sweep_spec.product(kl_target=[1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0])
