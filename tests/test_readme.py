"""README's own examples run as written: the extra-term example from a fresh directory, the error example."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    return f.read()


def _run(args, cwd):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                        check=False)


def test_the_extra_term_example_runs_from_the_directory_that_holds_my_terms(tmp_path):
  code = re.search(r"```python\n(# my_terms\.py\n.*?)```", _readme(), re.S).group(1)
  command = re.search(r"python experiments/train.py (--config\.extra_terms=\S+)", _readme()).group(1)
  (tmp_path / "my_terms.py").write_text(code)
  out = _run([os.path.join(ROOT, "experiments", "train.py"), command, "--config.num_steps=20",
              "--config.log_every=10", "--config.eval_every=20", "--config.checkpoint_every=20",
              "--config.num_pictures=0", "--config.iwae_samples=10", "--workdir=run"], cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as f:
    assert '"loss_decorrelation"' in f.read()


def test_the_bad_input_example_prints_what_readme_shows(tmp_path):
  shown = re.search(r"\$ python experiments/train.py (--config\.family=gan)\n(error: .*)\n", _readme())
  out = _run([os.path.join(ROOT, "experiments", "train.py"), shown.group(1), f"--workdir={tmp_path}"], cwd=ROOT)
  assert out.returncode == 2 and out.stderr.strip() == shown.group(2)
