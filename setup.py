"""ae_jax: autoencoders in JAX/Flax. `pip install -r requirements.txt -e .` installs the pinned stack."""

import setuptools

setuptools.setup(
    name="ae_jax",
    version="0.1.0",
    description="Autoencoders (undercomplete, sparse, denoising, contractive, variational) in JAX/Flax",
    packages=setuptools.find_packages(include=["ae_jax", "ae_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10", "flax>=0.12", "optax", "chex", "absl-py", "ml_collections", "orbax-checkpoint",
        "clu", "numpy", "scikit-learn", "threadpoolctl", "pillow", "matplotlib", "tensorflow-datasets",
    ],
    extras_require={"test": ["pytest"]},
)
