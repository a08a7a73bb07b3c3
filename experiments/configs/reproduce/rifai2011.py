"""Rifai et al. (2011), MNIST: one layer of 1000 sigmoid units as AE, DAE and CAE; the base config.

  python experiments/sweep.py --config=experiments/configs/reproduce/rifai2011.py \
      --sweep_file=experiments/sweeps/rifai2011.py --config.dataset=npz:mnist.npz --workdir=runs/rifai2011

The paper reports test errors after supervised fine-tuning: CAE 1.14% < DAE 1.18% < AE 1.78%. Here
the features are scored with the built-in linear probe (logistic regression on the codes of the
whole training split, `probe_accuracy` in eval.json), not fine-tuned, so the errors are higher; the
ordering and the Jacobian norms (`jacobian_frobenius_sq`) are what compare. Adam instead of SGD,
17 epochs at batch 128, Bernoulli cross-entropy, tied weights not used (the decoder has its own).
"""

from ae_jax.configs import default  # experiments/configs/ is the package ae_jax.configs


def get_config():
  c = default.get_config()
  c.family = "undercomplete"
  c.dataset = "mnist"  # Or npz:PATH to a Keras-layout MNIST.
  c.widths = ()
  c.latent_dim = 1000
  c.code_activation = "sigmoid"
  c.reconstruction = "bernoulli"
  c.noise = "masking"
  c.noise_level = 0.25
  c.contractive_weight = 0.1
  c.num_epochs = 17
  c.batch_size = 128
  c.log_every = 500
  c.eval_every = 4000
  c.checkpoint_every = 4000
  return c
