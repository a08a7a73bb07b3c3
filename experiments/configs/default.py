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
  # A validation split carved from the training examples (a fixed seeded subset, the same for every member):
  # logged and evaluated like the test split; a sweep's --select ranks on it. 0 = none.
  c.validation_fraction = 0.0

  # Model.
  c.architecture = "mlp"  # mlp | conv
  c.widths = (64,)  # Encoder hidden widths (mlp) or conv features; the decoder mirrors them.
  c.activation = "relu"
  c.code_activation = "linear"
  c.latent_dim = 8
  c.reconstruction = "bernoulli"  # bernoulli | squared_error | gaussian
  # Initial kernels: lecun_normal (flax's default) | glorot_uniform | glorot_normal | he_normal | he_uniform
  c.kernel_init = "lecun_normal"
  # The decoder's output bias: zero | data_mean (the logit of the mean training image, as the IWAE code does).
  c.init_output_bias = "zero"

  # Family hyperparameters (only the running family's are read).
  c.sparsity = "l1"  # l1 | kl | topk
  c.sparsity_weight = 1e-3  # Weight of the L1 or KL penalty.
  c.rho = 0.05  # KL's target mean activation.
  c.topk = 16  # TopK: active units per example.
  c.auxk = 64  # AuxK: dead units asked to model the residual.
  # TopK: a unit is dead (AuxK's) once it has not fired for this many training examples (Gao et al. 2024
  # use 10M tokens); the count lives in the train state. 10,000: as many examples as MNIST's test split,
  # on which eval.json's dead_fraction counts the units that never fire. <= batch_size: dead = silent
  # for the whole batch.
  c.dead_after = 10_000
  # AuxK's weight: 1/8, not Gao et al.'s 1/32, which leaves 2-5% of TopK's units dead on MNIST (3 seeds;
  # 1/8: 0.8-1.6%), see experiments/configs/reproduce/sparse_mnist.py.
  c.auxk_weight = 1 / 8
  c.noise = "masking"  # gaussian | masking | salt_and_pepper
  c.noise_level = 0.25  # sigma for gaussian, the corrupted fraction otherwise
  c.contractive_weight = 0.1
  c.contractive_path = "auto"  # auto | jacfwd | jacrev | mlp | stochastic
  c.beta = 1.0  # VAE: weight of the KL in the ELBO (1 is the true bound; the IWAE objective needs 1).
  c.vae_objective = "elbo"  # VAE: elbo | iwae (the importance-weighted bound of Burda et al. 2015).
  c.vae_samples = 1  # VAE: posterior samples per example (k); the ELBO averages over them, IWAE log-mean-exps.
  # Set points (ae_jax/setpoint.py; 0 = off, the coefficient above applies): ask for a quantity and the
  # program adapts its coefficient by dual ascent in log space, starting from the value above.
  c.kl_target = 0.0  # VAE: KL nats per example (adapts beta).
  c.reconstruction_target = 0.0  # VAE (GECO): reconstruction error per example (adapts beta).
  c.l0_target = 0.0  # Sparse L1/KL: active code units per example, as eval's l0 counts them (adapts sparsity_weight).
  c.jacobian_target = 0.0  # Contractive: squared Frobenius norm of the encoder Jacobian (adapts contractive_weight).
  c.setpoint_rate = 0.01  # The controller's step in log-coefficient per step at 100% relative error.

  # Extra user terms: "module:function=weight,..."; each function maps an
  # ae_jax.families.Forward to per-example values (B,).
  c.extra_terms = ""

  # Optimisation.
  c.optimizer = "adam"  # adam | adamw | sgd
  c.learning_rate = 1e-3  # The peak (warmup_cosine) or initial learning rate of the schedule.
  c.b1 = 0.9  # adam/adamw: decay of the first-moment average.
  c.b2 = 0.999  # adam/adamw: decay of the second-moment average.
  c.eps = 1e-8  # adam/adamw: added to sqrt(v) (the IWAE paper uses 1e-4).
  c.weight_decay = 1e-4  # adamw only: decoupled weight decay (optax's default).
  c.grad_clip = 0.0  # Clip gradients to this global norm; 0 = no clipping.
  # Learning-rate schedule: constant | warmup_cosine | exponential | piecewise | iwae (lr * 10^(-i/7)
  # for 3^i epochs, i = 0..7, Burda et al. 2015). Its numbers below are hyperparameters (sweepable).
  c.lr_schedule = "constant"
  c.warmup_steps = 0.0  # warmup_cosine: steps of linear warmup from 0 to learning_rate.
  c.final_lr_fraction = 0.0  # warmup_cosine: the rate at the last step, as a fraction of learning_rate.
  c.decay_rate = 0.1  # exponential: the factor applied every decay_steps (smoothly, not in stairs).
  c.decay_steps = 1000.0  # exponential: steps per decay_rate factor.
  c.boundaries = ()  # piecewise: the steps where the rate changes (structure), e.g. (2000, 4000).
  c.scales = ()  # piecewise: the factor applied at each boundary (cumulative), e.g. (0.1, 0.1).
  c.batch_size = 128
  c.num_steps = 3000
  c.num_epochs = 0  # > 0: train num_epochs * (training examples // batch_size) steps instead of num_steps.
  c.seed = 0
  # Members of a sweep on one device: auto (= vmap, the faster in every case measured) | vmap (vectorised)
  # | loop (one after another, in one program).
  c.member_vectorize = "auto"
  # How the device feed runs log_every steps: auto (scan, the faster form measured; docs/speed.md) | scan
  # (one jitted lax.scan per log interval) | step (one jitted, donated call per step). Same results.
  c.loop = "auto"

  # Logging.
  c.log_every = 250
  c.eval_every = 1000
  c.num_pictures = 16
  # End-of-run evaluation: full | quick (reconstruction, sparsity, ELBO terms: one pass over the test split)
  # | a comma-separated list of groups: pca, probe, jacobian, sparsity, denoising, likelihood.
  c.evaluate = "full"
  c.iwae_samples = 1000  # VAE: importance samples per test image for the log-likelihood (0: skip it).
  c.probe_examples = 0  # Training examples the linear probe fits on: 0 = the whole split, else a fixed subset.
  c.probe_max_iter = 1000  # L-BFGS iterations of the linear probe (a cap; it stops earlier at convergence).
  c.checkpoint_every = 1000  # Also saved at the end; rerunning with the same --workdir resumes.
  c.overwrite = False  # True: discard a run with a different config found in --workdir.
  return c
