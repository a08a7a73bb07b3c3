"""beta-VAE on digits: how the KL weight trades reconstruction for a smoother code, 3 seeds each.

  python experiments/sweep.py --config=experiments/configs/vae.py \
      --sweep_file=experiments/sweeps/vae_beta.py --workdir=runs/vae_beta

12 members: beta in {0.25, 1, 4, 16} times seeds 0, 1, 2.
"""

from ae_jax import sweep_spec


def get_sweep():
  return sweep_spec.with_seeds(sweep_spec.product(beta=[0.25, 1.0, 4.0, 16.0]), 3)
