"""experiments/configs/reproduce/: every paper row's config (and CPU variant) is valid and launches."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ae_jax import config as config_lib
from ae_jax import families
from ae_jax import hparams
from ae_jax import models
import configs  # tests/conftest.py puts experiments/ on sys.path.
from configs.reproduce import iwae2015  # tests/conftest.py puts experiments/ on sys.path.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [("hinton2006", None), ("rifai2011", None)] + [
    ("iwae2015", row + cpu) for row in iwae2015.ROWS for cpu in ("", "_cpu", "_cpu100")]


@pytest.mark.parametrize("name, variant", VARIANTS)
def test_each_row_is_a_valid_config_that_builds_its_loss(name, variant):
  config = configs.get(f"reproduce.{name}" + (f":{variant}" if variant else ""))
  config_lib.validate(config)
  model = families.model_from_config(config, (28, 28, 1))  # The paper's shapes fit MNIST.
  loss_fn = families.build(config, model)
  params = jax.eval_shape(lambda: models.init(model, jax.random.key(0), (28, 28, 1)))
  loss, (terms, _) = jax.eval_shape(loss_fn, params, {"image": jax.ShapeDtypeStruct((2, 28, 28, 1), np.float32)},
                                    jax.random.split(jax.random.key(0), 2), hparams.from_config(config),
                                    families.init_state(config))
  assert loss.shape == () and "loss_rec" in terms


def test_iwae_rows_follow_the_paper():
  vae, iwae50, cpu = iwae2015.get_config("vae"), iwae2015.get_config("iwae50"), iwae2015.get_config("vae_cpu")
  assert (vae.vae_objective, vae.vae_samples, iwae50.vae_objective, iwae50.vae_samples) == ("elbo", 1, "iwae", 50)
  assert (vae.widths, vae.latent_dim, vae.eps, vae.lr_schedule, vae.num_epochs) == ((200, 200), 50, 1e-4, "iwae", 3280)
  assert cpu.num_epochs < vae.num_epochs and cpu.lr_schedule == "exponential"
  short = iwae2015.get_config("iwae50_cpu100")  # The decay still ends at a tenth of the rate, on the shorter run.
  assert (short.num_epochs, short.decay_steps, short.vae_samples) == (100, 100 * 60_000 // 100, 50)
  with pytest.raises(ValueError, match="unknown variant 'vae_gpu'"):
    iwae2015.get_config("vae_gpu")


def test_a_variant_launches_from_the_command_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "train.py"),
       f"--config={os.path.join(ROOT, 'experiments', 'configs', 'reproduce', 'iwae2015.py')}:iwae5_cpu",
       "--config.dataset=digits", "--config.num_epochs=0", "--config.num_steps=2", "--config.log_every=1",
       "--config.evaluate=quick", "--config.num_pictures=0", f"--workdir={tmp_path}"],
      cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "negative_elbo" in out.stdout
