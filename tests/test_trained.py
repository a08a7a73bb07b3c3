"""ae_jax.load: a workdir back to a model whose encode/decode are the trained model's; sweep members; encode.py."""

import dataclasses
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import ae_jax
from ae_jax import data
from ae_jax import errors
from ae_jax import sweep
from ae_jax import train
from tests.conftest import family_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(family, **overrides):
  config = family_config(family)
  config.update({"num_steps": 20, "num_pictures": 0, "evaluate": "quick", "iwae_samples": 0, **overrides})
  return config


README_MEMBERS = [{"beta": b, "seed": s} for b in (1.0, 4.0) for s in (0, 1)]  # README's "Python use".


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory):
  """README's runs/vae_py and runs/vae_py_beta, tiny: (the folder that holds runs/, the run, the sweep)."""
  root = tmp_path_factory.mktemp("readme")
  config = _config("vae", evaluate="likelihood", iwae_samples=5)
  one = jax.devices()[:1]  # Quicker than the tests' four fake devices; loading does not care.
  (result,) = train.train_members([train.Member(config, str(root / "runs" / "vae_py"))], data.load("digits"),
                                  devices=one)
  out = sweep.run(config, README_MEMBERS, str(root / "runs" / "vae_py_beta"), select="log_likelihood", devices=one)
  return root, result, out


@pytest.fixture(scope="module")
def vae_run(readme_runs):
  root, result, _ = readme_runs
  return str(root / "runs" / "vae_py"), result


def test_a_loaded_run_encodes_and_decodes_as_the_trained_model(vae_run):
  workdir, result = vae_run
  model = ae_jax.load(workdir)
  x = model.dataset.test_images[:37]
  mean, _ = model.model.apply({"params": result.params}, x, method="encode")
  np.testing.assert_allclose(model.encode(x), mean, rtol=1e-5, atol=1e-6)  # The posterior mean.
  z = np.random.default_rng(0).standard_normal((5, model.config.latent_dim)).astype(np.float32)
  logits = model.model.apply({"params": result.params}, z, method="decode")
  np.testing.assert_allclose(model.decode(z), jax.nn.sigmoid(logits), rtol=1e-5, atol=1e-6)
  assert model.step == 20 and model.config.family == "vae"
  np.testing.assert_allclose(model.reconstruct(x), model.decode(model.encode(x)), rtol=1e-5, atol=1e-6)
  one = model.encode(x[0])  # One image gives one code.
  assert one.shape == (model.config.latent_dim,)


def test_sample_and_interpolate_are_batched_and_shaped_like_the_images(vae_run):
  model = ae_jax.load(vae_run[0])
  shape = model.dataset.example_shape
  samples = model.sample(7, seed=3)
  assert samples.shape == (7, *shape) and 0 <= samples.min() and samples.max() <= 1
  np.testing.assert_array_equal(samples, model.sample(7, seed=3))
  assert not np.array_equal(samples, model.sample(7, seed=4))
  x0, x1 = model.dataset.test_images[:3], model.dataset.test_images[3:6]
  lines = model.interpolate(x0, x1, steps=5)
  assert lines.shape == (3, 5, *shape)
  np.testing.assert_allclose(lines[:, 0], model.reconstruct(x0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(lines[:, -1], model.reconstruct(x1), rtol=1e-5, atol=1e-6)
  assert model.interpolate(x0[0], x1[0], steps=4).shape == (4, *shape)
  with pytest.raises(errors.ConfigError, match=r"images of shape \(2, 5\); this model takes \(N, 8, 8, 1\)"):
    model.encode(np.zeros((2, 5)))


def test_sweep_members_load_by_name_overrides_and_best(readme_runs):
  root, _, out = readme_runs
  workdir = str(root / "runs" / "vae_py_beta")
  by_name = {name: ae_jax.load(workdir, name) for name in out["names"]}
  for name, result in zip(out["names"], out["results"]):
    for a, b in zip(jax.tree.leaves(by_name[name].params), jax.tree.leaves(result.params)):
      np.testing.assert_array_equal(a, b)
  member = ae_jax.load(workdir, beta=4.0, seed=1)
  assert (member.config.beta, member.config.seed) == (4.0, 1)
  assert ae_jax.load(workdir, "best").workdir == os.path.join(workdir, out["best"]["member"])
  with pytest.raises(errors.ConfigError, match="2 members .* have"):
    ae_jax.load(workdir, beta=4)
  with pytest.raises(errors.ConfigError, match="no member 'x'"):
    ae_jax.load(workdir, "x")
  deterministic = dataclasses.replace(member, config=_config("undercomplete"))
  with pytest.raises(errors.ConfigError, match="draws codes from a prior"):
    deterministic.sample(2)


def test_readmes_load_block_runs_as_written(readme_runs, monkeypatch):
  root, _, _ = readme_runs
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    section = f.read().split("### Load a trained model")[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  monkeypatch.chdir(root)
  exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  assert os.path.getsize(root / "load_vae.png") > 0


def _encode(*args, cwd=ROOT):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "encode.py"), *args], cwd=cwd,
                        env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300, check=False)


def test_encode_py_exports_codes_and_labels_and_refuses_in_one_line(vae_run, tmp_path):
  workdir, _ = vae_run
  out = _encode(f"--workdir={workdir}", f"--out={tmp_path}/codes.npz")
  assert out.returncode == 0, out.stderr[-2000:]
  model = ae_jax.load(workdir)
  with np.load(tmp_path / "codes.npz") as codes:
    np.testing.assert_allclose(codes["z_test"], model.encode(model.dataset.test_images), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(codes["y_train"], model.dataset.train_labels)
    assert codes["z_train"].shape == (len(model.dataset.train_images), model.config.latent_dim)
  out = _encode(f"--workdir={tmp_path}/none", f"--out={tmp_path}/x.npz")
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
  assert out.stderr.startswith("error: ") and "holds no run" in out.stderr
