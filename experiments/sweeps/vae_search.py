"""A random search over a VAE's learning rate and beta: 27 drawn members, one compiled program.

  python experiments/sweep.py --config=experiments/configs/vae.py \
      --sweep_file=experiments/sweeps/vae_search.py --workdir=runs/vae_search --select=log_likelihood

The same as --sweep='learning_rate=loguniform(1e-4,1e-2);beta=uniform(0.25,4)' --members=27. The draws
are seeded (search_seed), so the command again resumes the same members; raising 27 keeps them and trains
only the new ones. Wrap in sweep_spec.with_seeds(..., 3) for seeds of each draw.
"""

from ae_jax import sweep_spec


def get_sweep():
  return sweep_spec.sample(27, search_seed=0, learning_rate=sweep_spec.loguniform(1e-4, 1e-2),
                           beta=sweep_spec.uniform(0.25, 4.0))
