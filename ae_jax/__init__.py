"""ae_jax: autoencoders in JAX/Flax with pure-function losses and a data-parallel jitted step."""

__version__ = "0.1.0"
