"""tests/mutants.py, the mutation check's list: it matches the code, names tests that exist, applies cleanly.

Running the mutants takes minutes (CI does, after the suite); these checks take none, so a change to a
mutated line is named here first.
"""

import os
import re

from tests import mutants

AREAS = ("ae_jax/losses/", "ae_jax/families.py", "ae_jax/step.py", "ae_jax/feeds.py", "ae_jax/hparams.py",
         "ae_jax/evaluation.py", "ae_jax/evaluators.py", "ae_jax/likelihood.py", "ae_jax/sweep.py",
         "ae_jax/workdir.py")


def test_every_original_appears_exactly_once_in_its_file():
  assert mutants.stale(mutants.MUTANTS) == []


def test_the_list_covers_every_area_with_unique_names():
  names = [m.name for m in mutants.MUTANTS]
  assert len(names) >= 20 and len(set(names)) == len(names)
  for area in AREAS:
    assert any(m.path.startswith(area) for m in mutants.MUTANTS), area
  for m in mutants.MUTANTS:
    assert m.tests and m.why and all(original != mutated for original, mutated in m.edits), m.name


def test_every_named_test_exists():
  for m in mutants.MUTANTS:
    for node in m.tests:
      path, _, name = node.partition("::")
      with open(os.path.join(mutants.ROOT, path), encoding="utf-8") as f:
        source = f.read()
      if name:
        assert re.search(rf"^def {re.escape(name.split('[')[0])}\(", source, re.M), (m.name, node)


def test_apply_writes_every_edit_and_returns_the_original(tmp_path):
  m = mutants.Mutant("toy", "toy.py", (("a = 1", "a = 2"), ("b = 3", "b = 4")), ("tests/test_toy.py",), "toy")
  (tmp_path / "toy.py").write_text("a = 1\nb = 3\n")
  assert mutants._apply(str(tmp_path), m) == "a = 1\nb = 3\n"  # pylint: disable=protected-access
  assert (tmp_path / "toy.py").read_text() == "a = 2\nb = 4\n"
  assert mutants.stale([m], str(tmp_path)) == [
      "toy: toy.py holds 0 copies of 'a = 1' (it needs exactly 1)",
      "toy: toy.py holds 0 copies of 'b = 3' (it needs exactly 1)"]
