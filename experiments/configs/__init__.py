"""Experiment configs: one file per experiment, each with `get_config()`.

From Python, `ae_jax.configs.get` loads one by name (this folder is the package `ae_jax.configs`):

    from ae_jax import configs
    config = configs.get("vae", latent_dim=16)
    config = configs.get("reproduce.iwae2015:vae_cpu")    # a variant, as --config=FILE:VARIANT

Family files import `default` (as `ae_jax.configs.default`) and override what differs; `test` is the
CPU-tiny config of the tests. Imported as `configs` (experiments/ on sys.path), `get` is the same.
"""

from ae_jax.configs import get  # noqa: F401  # pylint: disable=unused-import
