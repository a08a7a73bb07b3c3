"""Default config: an undercomplete MLP autoencoder on the embedded digits; every key lives here.

  python experiments/train.py --config=experiments/configs/default.py --workdir=runs/default

Family configs import this one and override what differs.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.family = "undercomplete"  # undercomplete | sparse | denoising | contractive | vae

  # Data: "digits" (embedded, offline), a tensorflow-datasets name, or "npz:PATH" (Keras layout).
  c.dataset = "digits"
  c.data_dir = ""  # tensorflow-datasets data_dir; "" uses tfds' default.
  c.binarize = "none"  # none | static (x > 0.5) | dynamic (Bernoulli resampled every step)
  c.data_placement = "auto"  # auto | device (gathered on device) | stream (from host, prefetched)

  # Model.
  c.architecture = "mlp"  # mlp | conv
  c.widths = (64,)  # Encoder hidden widths (mlp) or conv features; the decoder mirrors them.
  c.activation = "relu"
  c.code_activation = "linear"
  c.latent_dim = 8
  c.reconstruction = "bernoulli"  # bernoulli | squared_error | gaussian

  # Family hyperparameters (only the running family's are read).
  c.sparsity = "l1"  # l1 | kl | topk
  c.sparsity_weight = 1e-3  # Weight of the L1 or KL penalty.
  c.rho = 0.05  # KL's target mean activation.
  c.topk = 16  # TopK: active units per example.
  c.auxk = 64  # AuxK: dead units asked to model the residual.
  c.auxk_weight = 1 / 32
  c.noise = "masking"  # gaussian | masking | salt_and_pepper
  c.noise_level = 0.25  # sigma for gaussian, the corrupted fraction otherwise
  c.contractive_weight = 0.1
  c.contractive_path = "auto"  # auto | jacfwd | jacrev | mlp | stochastic
  c.beta = 1.0

  # Extra user terms: "module:function=weight,..."; each function maps an
  # ae_jax.families.Forward to per-example values (B,).
  c.extra_terms = ""

  # Optimisation.
  c.optimizer = "adam"  # adam | adamw | sgd
  c.learning_rate = 1e-3
  c.batch_size = 128
  c.num_steps = 3000
  c.seed = 0
  # Members of a sweep on one device: auto | vmap (vectorised) | loop (one after another, one program).
  c.member_vectorize = "auto"

  # Logging.
  c.log_every = 250
  c.eval_every = 1000
  c.num_pictures = 16
  c.iwae_samples = 1000  # VAE: importance samples per test image for the log-likelihood.
  c.checkpoint_every = 1000  # Also saved at the end; rerunning with the same --workdir resumes.
  c.overwrite = False  # True: discard a run with a different config found in --workdir.
  return c
