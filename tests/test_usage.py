"""A new user's first hour: configs from Python, README's commands that do not collide, one overwrite
flag, an explicit num_steps that counts, a user term's shape error in the user's batch shape."""

import json
import os
import re
import shlex
import subprocess
import sys

from absl import flags
import jax.numpy as jnp
from ml_collections import config_flags
import pytest

from ae_jax import cli
from ae_jax import config as config_lib
from ae_jax import configs
from ae_jax import data
from ae_jax import errors
from ae_jax import hparams
from ae_jax import program
from ae_jax import workdir as workdir_lib
from tests.conftest import family_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, cwd) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=dict(os.environ, PYTHONPATH=ROOT),
                        capture_output=True, text=True, timeout=300, check=False)


def test_configs_load_from_python_anywhere_without_path_tricks(tmp_path):
  out = _python("import ae_jax, sys; c = ae_jax.configs.get('vae', beta=4); "
                "t = ae_jax.configs.get('reproduce.sparse_mnist:topk'); "
                "print(c.family, c.beta, t.sparsity, 'jax' in sys.modules)", cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["vae", "4.0", "topk", "False"]  # And `import ae_jax` loaded no JAX.
  with pytest.raises(errors.ConfigError, match="no config 'vea'; the configs are .*vae"):
    configs.get("vea")
  with pytest.raises(errors.ConfigError, match="has no key 'bta'"):
    configs.get("vae", bta=4)


def _readme_train_lines() -> list[str]:
  """README's train.py commands of the quickstart and Usage (not the error example), in order."""
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  usage = text[:text.index("\n## Sweeps")]
  return [m.group(1) for m in re.finditer(r"^(?:.*&& \.venv/bin/)?python experiments/train\.py(.*)$", usage, re.M)]


def _parse(args: list[str]):
  """The config and the workdir train.py makes of `args` (its own flag definitions, not a copy)."""
  argv = ["train.py", *[a.replace("experiments/", os.path.join(ROOT, "experiments", ""), 1) for a in args]]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", os.path.join(configs.DIRECTORY, "default.py"), flag_values=values,
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  flags.DEFINE_bool("overwrite", False, "", flag_values=values)
  values(argv)
  config = values.config
  cli.explicit_num_steps(config, config_flags.get_override_values(values["config"]))
  return config, values.workdir or workdir_lib.default_for(config.to_dict(), configs.get("default").to_dict())


def test_readmes_train_lines_run_in_order_are_not_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  lines = _readme_train_lines()
  assert len(lines) >= 7, lines
  seen = {}
  for line in lines:
    config, workdir = _parse(shlex.split(line))
    workdir_lib.check(workdir, config)  # What train.py checks before training: no refusal.
    workdir_lib.prepare(workdir, config)  # As if the run had started: the next lines meet its record.
    seen.setdefault(workdir, []).append(line)
  assert len(seen) == len(lines), seen  # Every line its own folder: none resumes another's run.
  config, again = _parse(shlex.split(lines[1]))
  assert again in seen and again.startswith(os.path.join("runs", config.family, ""))  # The same command, its folder.


def test_the_default_workdir_is_the_config_s_own():
  base = family_config("vae").to_dict()
  defaults = configs.get("default").to_dict()
  name = workdir_lib.default_for(base, defaults)
  assert re.fullmatch(r"runs/vae/[0-9a-f]{8}", name)
  assert workdir_lib.default_for({**base, "num_steps": 7, "log_every": 1}, defaults) == name  # Resumable keys.
  assert workdir_lib.default_for({**base, "beta": 2.0}, defaults) != name
  assert workdir_lib.default_for({**base, "new_key": 1}, {**defaults, "new_key": 1}) == name  # A key added later.
  sweep = workdir_lib.default_for(base, defaults, swept=["beta", "seed"])
  assert sweep.startswith("runs/sweep_vae/") and sweep == workdir_lib.default_for(base, defaults, swept=["beta"])
  assert sweep != workdir_lib.default_for(base, defaults, swept=["learning_rate"])


def test_one_overwrite_flag_for_train_py(tmp_path):
  workdir = str(tmp_path / "run")
  workdir_lib.prepare(workdir, configs.get("test", latent_dim=3))  # Another run's record.
  with pytest.raises(config_lib.ConfigError, match="pass --overwrite to discard that run"):
    workdir_lib.check(workdir, configs.get("test"))
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "train.py"), "--config=experiments/configs/test.py",
       "--config.num_steps=2", "--config.log_every=1", "--config.eval_every=2", "--config.checkpoint_every=2",
       "--config.num_pictures=0", "--config.evaluate=quick", f"--workdir={workdir}", "--overwrite"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  with open(workdir_lib.path(workdir, workdir_lib.CONFIG), encoding="utf-8") as f:
    assert json.load(f)["latent_dim"] == configs.get("test").latent_dim  # The old run was discarded.


def test_num_steps_on_the_command_line_wins_over_the_config_file_s_num_epochs():
  config = configs.get("test", num_epochs=50, num_steps=20)  # As --config.num_steps=20 leaves it.
  cli.explicit_num_steps(config, {"num_steps": 20})
  assert config.num_epochs == 0 and config_lib.resolve_steps(config, 1000) == 20
  config = configs.get("test", num_epochs=50)
  cli.explicit_num_steps(config, {"latent_dim": 3})  # num_steps not given: the file's epochs count.
  assert config.num_epochs == 50
  with pytest.raises(SystemExit) as exit_:
    cli.explicit_num_steps(configs.get("test", num_epochs=5), {"num_steps": 20, "num_epochs": 5})
  assert exit_.value.code == 2


def scalar_term(forward):
  """The mistake the message is for: the batch mean, not one value per example."""
  return jnp.mean(forward.code)


def test_a_scalar_user_term_is_refused_with_the_user_s_batch_shape():
  config = family_config("undercomplete")
  config.update({"extra_terms": "tests.test_usage:scalar_term=0.1", "batch_size": 24})
  with pytest.raises(config_lib.ConfigError, match=r"shape \(B,\) = \(24,\) .* returned shape \(\) .*a scalar"):
    program.build(config, data.load("digits"), [hparams.from_config(config)])
