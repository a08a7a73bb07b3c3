"""Bad config values and config files fail in one line on stderr with exit code 2, never a traceback."""

import math
import os
import subprocess
import sys

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import ml_collections
import numpy as np
import pytest

from ae_jax import activations
from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import families
from ae_jax import feeds
from ae_jax import models
from ae_jax import step as step_lib
from ae_jax.losses import contractive
from ae_jax.losses import corruption
from ae_jax.losses import reconstruction
from configs import default  # tests/conftest.py puts experiments/ on sys.path.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*args):
  """Runs experiments/train.py with this checkout's ae_jax first on the path."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train.py"), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def _one_error_line(out) -> str:
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
  return lines[0]


@pytest.mark.parametrize("override,expected", [
    ("--config.learning_rate=nan", "error: --config.learning_rate=nan must be a finite number"),
    ("--config.beta=inf", "error: --config.beta=inf must be a finite number"),
])
def test_non_finite_override(override, expected, tmp_path):
  out = _train("--config=experiments/configs/test.py", override, f"--workdir={tmp_path}/run")
  assert _one_error_line(out) == expected
  assert not os.path.exists(tmp_path / "run")  # Rejected before any work started.


CONFIG_FILES = {
    "syntax.py": ("import ml_collections\n\n\ndef get_config(:\n  return ml_collections.ConfigDict()\n",
                  ["line 4: SyntaxError: invalid syntax"]),
    "raises.py": ("import ml_collections\n\n\ndef get_config():\n  c = ml_collections.ConfigDict()\n"
                  "  return c.learning_rate / 0\n", ["line 6: get_config() raised AttributeError"]),
    "divides.py": ("def get_config():\n  rate = 1 / 0\n  return rate\n",
                   ["line 2: get_config() raised ZeroDivisionError: division by zero"]),
    "raises_on_import.py": ("import json\n\nSETTINGS = json.loads('{')\n",
                            ["line 3: importing it raised JSONDecodeError"]),
    "no_get_config.py": ("import ml_collections\n\nCONFIG = ml_collections.ConfigDict()\n",
                         ["has no get_config()"]),
    "returns_none.py": ("def get_config():\n  pass\n", ["get_config() returned None"]),
}


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_bad_config_file(name, tmp_path):
  text, expected = CONFIG_FILES[name]
  path = tmp_path / name
  path.write_text(text)
  line = _one_error_line(_train(f"--config={path}", f"--workdir={tmp_path}/run"))
  assert line.startswith(f"error: config file {path}"), line
  for part in expected:
    assert part in line, line


def test_missing_config_file(tmp_path):
  line = _one_error_line(_train(f"--config={tmp_path}/nope.py", f"--workdir={tmp_path}/run"))
  assert line == f"error: config file {tmp_path}/nope.py not found (from {ROOT}); check the path given to --config"


# Every key validate() knows, by what makes a value invalid; choice keys with the family that reads them.
FLOAT_KEYS = ("learning_rate", "sparsity_weight", "rho", "auxk_weight", "noise_level", "contractive_weight",
              "beta", "b1", "b2", "eps", "grad_clip", "weight_decay", "warmup_steps", "final_lr_fraction",
              "decay_rate", "decay_steps")
POSITIVE_INT_KEYS = ("batch_size", "num_steps", "latent_dim", "log_every", "eval_every", "checkpoint_every",
                     "probe_max_iter")
NON_NEGATIVE_INT_KEYS = ("num_epochs", "probe_examples", "iwae_samples")  # 0 means something (see default.py).
NUMERIC_KEYS = FLOAT_KEYS + POSITIVE_INT_KEYS + NON_NEGATIVE_INT_KEYS + ("num_pictures", "topk", "auxk", "dead_after",
                                                                         "seed", "vae_samples")
CHOICE_KEYS = {
    "family": (families.NAMES, None),
    "architecture": (config_lib.ARCHITECTURES, None),
    "optimizer": (step_lib.OPTIMIZERS, None),
    "member_vectorize": (step_lib.MEMBER_VECTORIZE, None),
    "reconstruction": (reconstruction.KINDS, None),
    "binarize": (data.BINARIZE, None),
    "data_placement": (("auto", "device", "stream"), None),
    "loop": (feeds.LOOPS, None),
    "activation": (activations.NAMES, None),
    "code_activation": (activations.NAMES, None),
    "sparsity": (families.SPARSITY, "sparse"),
    "noise": (corruption.KINDS, "denoising"),
    "contractive_path": (contractive.PATHS, "contractive"),
    "lr_schedule": (step_lib.LR_SCHEDULES, None),
    "kernel_init": (tuple(models.KERNEL_INITS), None),
    "init_output_bias": (models.OUTPUT_BIASES, None),
    "vae_objective": (families.VAE_OBJECTIVES, "vae"),
}


@st.composite
def _invalid_setting(draw):
  """(family or None, key, an invalid value for it)."""
  kind = draw(st.sampled_from(["non_finite", "non_positive", "negative", "string", "choice"]))
  if kind == "non_finite":
    number = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return None, draw(st.sampled_from(FLOAT_KEYS)), draw(st.sampled_from([float, np.float32, np.float64]))(number)
  if kind == "non_positive":
    return None, draw(st.sampled_from(POSITIVE_INT_KEYS)), draw(st.integers(max_value=0))
  if kind == "negative":
    return None, draw(st.sampled_from(NON_NEGATIVE_INT_KEYS)), draw(st.integers(max_value=-1))
  if kind == "string":
    return None, draw(st.sampled_from(NUMERIC_KEYS)), draw(st.text(max_size=8))
  key = draw(st.sampled_from(sorted(CHOICE_KEYS)))
  choices, family = CHOICE_KEYS[key]
  return family, key, draw(st.text(max_size=8).filter(lambda value: value not in choices))


def test_default_config_is_valid():
  config_lib.validate(default.get_config())  # So a ConfigError below comes from the one bad value.


@settings(max_examples=80, deadline=None, database=None)
@given(_invalid_setting())
def test_validate_names_the_bad_key_in_one_line(setting):
  family, key, value = setting
  values = default.get_config().to_dict()
  values["family"] = family or values["family"]
  values[key] = value
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(ml_collections.ConfigDict(values))  # Untyped: any value, as a config file could set.
  message = str(info.value)
  assert len(message.splitlines()) == 1 and f"--config.{key}=" in message, (key, value, message)


def _invalid_flag_value(key: str, current) -> st.SearchStrategy:
  """Command-line text that `key` must refuse, given the type of its default value."""
  if isinstance(current, bool):
    return st.just("maybe")
  if isinstance(current, float):
    bad = ["nan", "inf", "-inf", "-1.5", "abc"] if key in ("learning_rate",) else ["nan", "inf", "abc"]
    return st.sampled_from(bad)
  if isinstance(current, int):
    if key in POSITIVE_INT_KEYS:
      return st.sampled_from(["0", "-3", "1.5", "abc"])
    return st.sampled_from(["-3", "1.5", "abc"] if key in NON_NEGATIVE_INT_KEYS else ["1.5", "abc"])
  if key in CHOICE_KEYS and CHOICE_KEYS[key][1] is None:
    return st.text(alphabet="abcxyz_", min_size=1, max_size=6).filter(lambda v: v not in CHOICE_KEYS[key][0])
  return st.nothing()


_FLAG_KEYS = sorted(k for k, v in default.get_config().items()
                    if k in FLOAT_KEYS + POSITIVE_INT_KEYS + NON_NEGATIVE_INT_KEYS
                    or (k in CHOICE_KEYS and CHOICE_KEYS[k][1] is None))


@st.composite
def _invalid_flag(draw):
  key = draw(st.sampled_from(_FLAG_KEYS))
  return key, draw(_invalid_flag_value(key, default.get_config()[key]))


@settings(max_examples=12, deadline=None, database=None)
@given(_invalid_flag())
def test_invalid_flag_values_exit_2_in_one_line_and_leave_the_workdir_usable(tmp_path_factory, flag):
  key, value = flag
  workdir = tmp_path_factory.getbasetemp() / "shared_workdir"
  out = _train("--config=experiments/configs/test.py", f"--config.{key}={value}", f"--workdir={workdir}")
  line = _one_error_line(out)
  assert key in line, (key, value, line)
  assert not os.path.exists(workdir / "run_config.json")  # Nothing written that a valid run would trip on.


def test_a_valid_run_after_refused_ones_in_the_same_workdir(tmp_path):
  for bad in ("--config.learning_rate=nan", "--config.batch_size=0", "--config.family=gan"):
    _one_error_line(_train("--config=experiments/configs/test.py", bad, f"--workdir={tmp_path}"))
  out = _train("--config=experiments/configs/test.py", "--config.num_steps=10", "--config.num_pictures=0",
               f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-2000:]
  _assert_quiet_log(out.stderr)


def _assert_quiet_log(stderr: str) -> None:
  """The default log: ae_jax's progress lines, and no library INFO (orbax's saves, clu, TensorFlow)."""
  assert "step 10/10" in stderr, stderr[-2000:]
  for noise in ("checkpoint_manager.py", "[Hyperparameters]", "oneDNN", "xla_bridge.py"):
    assert noise not in stderr, (noise, stderr[-2000:])


def test_verbosity_1_shows_the_libraries_info_lines():
  import logging  # pylint: disable=g-import-not-at-top

  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  from ae_jax import cli  # pylint: disable=g-import-not-at-top

  def record(path, level=logging.INFO):
    return logging.LogRecord("absl", level, path, 1, "message", None, None)

  orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  handler = absl_logging.get_absl_handler()
  try:
    cli.quiet_library_logs(verbose=False)
    assert not handler.filter(record(orbax))
    assert handler.filter(record(orbax, logging.WARNING))
    assert handler.filter(record(os.path.join(ROOT, "ae_jax", "train.py")))
    cli.quiet_library_logs(verbose=True)
    assert handler.filter(record(orbax))
  finally:
    handler.removeFilter(cli._own_or_warning)  # pylint: disable=protected-access


def test_a_non_finite_loss_exits_3_in_one_line_naming_step_terms_and_what_to_change(tmp_path):
  out = _train("--config=experiments/configs/test.py", "--config.learning_rate=1e30", "--config.optimizer=adam",
               f"--workdir={tmp_path}")
  assert out.returncode == 3, out.stderr[-2000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert "non-finite at step" in errors[0] and "loss" in errors[0] and "--config.learning_rate" in errors[0]


def test_an_exception_in_a_user_term_names_the_term_and_keeps_the_users_traceback(tmp_path):
  (tmp_path / "bad_terms.py").write_text("def explode(forward):\n  return forward.code.sum(axis=1) / undefined_name\n")
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train.py"),
                        f"--config={ROOT}/experiments/configs/test.py", "--config.extra_terms=bad_terms:explode",
                        f"--workdir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  first = next(line for line in out.stderr.splitlines() if line.startswith("error:"))
  assert "extra term 'explode' (bad_terms:explode) raised NameError" in first
  assert "bad_terms.py" in out.stderr and "undefined_name" in out.stderr  # The user's own frame.


@pytest.mark.parametrize("args, match", [
    (["--num_processes=2", "--process_id=0"], "--coordinator_address"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"], "--process_id=2"),
])
def test_bad_distributed_flags_are_one_line_and_exit_code_2(args, match, tmp_path):
  line = _one_error_line(_train("--config=experiments/configs/test.py", *args, f"--workdir={tmp_path}"))
  assert match in line, line


def test_the_sparse_mnist_reproduction_variants_are_valid():
  from configs.reproduce import sparse_mnist  # pylint: disable=g-import-not-at-top

  kl, topk = sparse_mnist.get_config("kl"), sparse_mnist.get_config("topk")
  for config in (kl, topk):
    config_lib.validate(config)
  assert (kl.sparsity, kl.code_activation, kl.sparsity_weight) == ("kl", "sigmoid", 5.0)
  assert (topk.sparsity, topk.topk, tuple(topk.widths), topk.dead_after) == ("topk", 16, (), 10_000)
  with pytest.raises(ValueError, match="unknown variant"):
    sparse_mnist.get_config("l1")
