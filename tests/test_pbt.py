"""Population-based training inside the sweep's program: exploits, lineage, replay, resume."""

import json
import os

import jax
import numpy as np
import pytest

from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import pbt
from ae_jax import sweep
from ae_jax import sweep_spec
from ae_jax import workdir as workdir_lib
from tests.conftest import family_config

RATES = (1e-4, 3e-4, 1e-3, 3e-3)


def test_the_bottom_quantile_copies_the_top_and_non_finite_ranks_last():
  rng = np.random.default_rng(0)
  assert pbt.decide([1.0, 2.0, 3.0, 4.0], quantile=0.25, rng=rng) == {3: 0}
  assert pbt.decide([4.0, float("nan"), 1.0, 2.0], quantile=0.25, rng=rng) == {1: 2}  # NaN: worst, never parent.
  moves = pbt.decide([5.0, 1.0, 2.0, 6.0, 7.0, 3.0, 8.0, 4.0], quantile=0.25, rng=rng)
  assert set(moves) == {4, 6} and set(moves.values()) <= {1, 2}
  assert pbt.decide([1.0], quantile=0.25, rng=rng) == {}
  assert pbt.decide([float("nan")] * 4, quantile=0.5, rng=rng) == {}  # No finite parent: nobody moves.


def test_exploring_multiplies_the_parents_values_by_a_drawn_factor():
  rng = np.random.default_rng(1)
  draws = [pbt.perturb({"learning_rate": 1e-3, "beta": 2.0, "seed": 0}, ["learning_rate", "beta"],
                       factors=(0.8, 1.25), rng=rng) for _ in range(40)]
  assert all(set(d) == {"learning_rate", "beta"} for d in draws)
  assert {round(d["learning_rate"] / 1e-3, 4) for d in draws} == {0.8, 1.25}
  assert {round(d["beta"] / 2.0, 4) for d in draws} == {0.8, 1.25}


def test_a_key_drawn_from_a_range_is_sometimes_redrawn_from_it():
  spaces = pbt.ranges({"members": 8, "search_seed": 0, "spaces": {"learning_rate": "loguniform(1e-4, 1e-2)",
                                                                   "beta": [0.5, 1.0]}})
  assert set(spaces) == {"learning_rate"}  # Listed values have no range to redraw from.
  rng = np.random.default_rng(3)
  draws = [pbt.perturb({"learning_rate": 1e-3, "beta": 2.0}, ["learning_rate", "beta"], factors=(0.8, 1.25),
                       rng=rng, spaces=spaces)["learning_rate"] for _ in range(400)]
  scaled = [d for d in draws if round(d / 1e-3, 4) in (0.8, 1.25)]
  redrawn = [d for d in draws if round(d / 1e-3, 4) not in (0.8, 1.25)]
  assert 0.15 < len(redrawn) / len(draws) < 0.35 and len(scaled) + len(redrawn) == len(draws)
  assert all(1e-4 <= d <= 1e-2 for d in redrawn)
  again = np.random.default_rng(3)  # Deterministic in the generator: a resumed search decides the same.
  assert pbt.perturb({"learning_rate": 1e-3, "beta": 2.0}, ["learning_rate"], factors=(0.8, 1.25), rng=again,
                     spaces=spaces)["learning_rate"] == draws[0]


def test_explored_keys_are_hyperparameters():
  assert pbt.explored_keys([{"learning_rate": 1e-3, "seed": 0}, {"learning_rate": 1e-2, "seed": 1}], None) == [
      "learning_rate"]
  with pytest.raises(sweep_spec.SweepError, match="--explore=latent_dim"):
    pbt.explored_keys([{"learning_rate": 1e-3}], ["latent_dim"])
  with pytest.raises(sweep_spec.SweepError, match="nothing to explore"):
    pbt.explored_keys([{"seed": 0}, {"seed": 1}], None)


def test_lineage_walks_back_through_the_members_whose_state_it_took():
  exploits = [{"step": 10, "moves": [{"member": "c", "parent": "a", "hp": {"learning_rate": 0.8}}]},
              {"step": 20, "moves": [{"member": "b", "parent": "c", "hp": {"learning_rate": 0.64}}]},
              {"step": 30, "moves": [{"member": "a", "parent": "b", "hp": {"learning_rate": 0.5}}]}]
  assert pbt.lineage("b", exploits, 40) == [
      {"member": "a", "start": 0, "end": 10, "hp": None},
      {"member": "c", "start": 10, "end": 20, "hp": {"learning_rate": 0.8}},
      {"member": "b", "start": 20, "end": 40, "hp": {"learning_rate": 0.64}}]
  assert pbt.lineage("d", exploits, 40) == [{"member": "d", "start": 0, "end": 40, "hp": None}]
  hps = pbt.replay_hp([{"learning_rate": 1.0}] * 3, exploits[:2], ["a", "b", "c"])
  assert [h["learning_rate"] for h in hps] == [1.0, 0.64, 0.8]


def _config(**overrides):
  config = family_config("undercomplete")
  config.update({"num_steps": 40, "log_every": 10, "eval_every": 10, "checkpoint_every": 20, "evaluate": "quick",
                 "num_pictures": 0, "validation_fraction": 0.2, **overrides})
  return config


def _params_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6)


def test_a_population_exploits_and_a_replay_ends_where_its_member_did(tmp_path):
  members = [{"learning_rate": lr} for lr in RATES]
  out = sweep.run(_config(), members, str(tmp_path / "pop"), search="pbt", devices=jax.devices()[:1])
  record = workdir_lib.read_search(str(tmp_path / "pop"))
  assert [e["step"] for e in record["exploits"]] == [10, 20, 30]  # Not at the last step.
  assert all(len(e["moves"]) == 1 for e in record["exploits"])  # A quarter of 4.
  first = record["exploits"][0]
  worst = max(first["scores"], key=first["scores"].get)
  assert first["moves"][0]["member"] == worst == out["names"][0]  # The slowest rate is worst at step 10.
  assert all(r.status == "done" for r in out["results"])
  fate = dict(zip(out["names"], (row["fate"] for row in out["rows"])))
  assert fate[worst].startswith(f"replaced at step 10 by {first['moves'][0]['parent']}")
  moved = {m["member"] for e in record["exploits"] for m in e["moves"]}
  assert all((fate[n] == "kept its own state") == (n not in moved) for n in out["names"])
  assert "fate" in open(out["paths"]["markdown"], encoding="utf-8").read()
  with open(out["paths"]["search"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # Replay the member whose final state went through the most others.
  longest = max(out["names"], key=lambda n: len(pbt.lineage(n, record["exploits"], 40)))
  assert len(pbt.lineage(longest, record["exploits"], 40)) >= 2
  configs = dict(zip(out["names"], sweep.member_configs(_config(), members)))
  replayed = pbt.replay(configs, longest, record["exploits"], data.load("digits"), str(tmp_path / "replay"))
  i = out["names"].index(longest)
  _params_close(replayed.params, out["results"][i].params)
  assert replayed.test["loss"] == pytest.approx(out["results"][i].test["loss"], rel=1e-4)
  assert os.path.exists(tmp_path / "replay" / "eval.json")


def test_a_killed_population_resumes_to_the_same_parameters(tmp_path):
  members = [{"learning_rate": lr} for lr in RATES]
  whole = sweep.run(_config(), members, str(tmp_path / "whole"), search="pbt")
  # "Killed" after step 20's checkpoint: later checkpoints, exploits and statuses are not there yet.
  sweep.run(_config(), members, str(tmp_path / "cut"), search="pbt")
  for name in whole["names"]:
    os.remove(tmp_path / "cut" / name / "status.json")
    os.system(f"rm -rf {tmp_path / 'cut' / name / 'checkpoints' / '40'}")
  record = workdir_lib.read_search(str(tmp_path / "cut"))
  record["exploits"] = [e for e in record["exploits"] if e["step"] <= 20]
  workdir_lib.write_search(str(tmp_path / "cut"), record)
  again = sweep.run(_config(), members, str(tmp_path / "cut"), search="pbt")
  assert workdir_lib.read_search(str(tmp_path / "cut"))["exploits"] == workdir_lib.read_search(
      str(tmp_path / "whole"))["exploits"]
  for a, b in zip(whole["results"], again["results"]):
    _params_close(a.params, b.params)


def test_bad_pbt_input_is_one_line(tmp_path):
  members = [{"learning_rate": lr} for lr in RATES]
  with pytest.raises(sweep_spec.SweepError, match="--pbt_interval=15 must be a multiple"):
    sweep.run(_config(), members, str(tmp_path / "a"), search="pbt", pbt_interval=15)
  with pytest.raises(sweep_spec.SweepError, match="--explore=widths"):
    sweep.run(_config(), members, str(tmp_path / "b"), search="pbt", explore=["widths"])
  with pytest.raises(config_lib.ConfigError, match="not read by the undercomplete family"):
    sweep.run(_config(), [{"beta": 1.0}, {"beta": 2.0}], str(tmp_path / "c"), search="pbt")
  with open(tmp_path / "a" / "sweep.json", encoding="utf-8") as f:
    assert json.load(f)["members"] == members


def test_two_processes_exploit_as_one_and_the_cli_replays_a_member(tmp_path):
  import configs  # pylint: disable=g-import-not-at-top
  from tests import test_distributed as dist  # pylint: disable=g-import-not-at-top  # Its launcher.

  flags = ["--config=experiments/configs/test.py", "--config.num_steps=30", "--config.eval_every=10",
           "--config.checkpoint_every=10", "--config.evaluate=quick", "--config.num_pictures=0", "--search=pbt",
           f"--sweep=learning_rate={','.join(map(str, RATES))}", f"--workdir={tmp_path / 'two'}"]
  port = dist._free_port()  # pylint: disable=protected-access
  outs = dist._wait([dist._launch("sweep.py", flags, devices=2, process_id=i, port=port)  # pylint: disable=protected-access
                     for i in range(2)])
  assert all(code == 0 for code, _, _ in outs), outs[0][2][-2000:] + outs[1][2][-2000:]
  config = configs.get("test", num_steps=30, eval_every=10, checkpoint_every=10, evaluate="quick", num_pictures=0)
  sweep.run(config, [{"learning_rate": lr} for lr in RATES], str(tmp_path / "one"), search="pbt")
  two_record, one_record = (workdir_lib.read_search(str(tmp_path / d)) for d in ("two", "one"))
  assert [e["moves"] for e in two_record["exploits"]] == [e["moves"] for e in one_record["exploits"]]
  member = one_record["exploits"][0]["moves"][0]["member"]
  replayed = dist._wait([dist._launch("sweep.py", [*flags, f"--replay={member}"], devices=1)])[0]  # pylint: disable=protected-access
  assert replayed[0] == 0, replayed[2][-2000:]
  losses = [float(x) for x in replayed[1].split("test loss ")[1].split(" in the population, ")[0:1]] + [
      float(replayed[1].split(" in the population, ")[1].split(" replayed")[0])]
  assert losses[0] == pytest.approx(losses[1], rel=1e-4)
  with pytest.raises(sweep_spec.SweepError, match="--replay=nobody: no such member"):
    sweep.replay(config, [{"learning_rate": lr} for lr in RATES], str(tmp_path / "one"), "nobody")
