"""ae_jax.sweep_spec: building, parsing, loading, checking and naming sweep members."""

import os
import re

import pytest

from ae_jax import sweep_spec
from ae_jax.sweep_spec import SweepError
from configs import default  # experiments/ is on sys.path (tests/conftest.py).

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def config():
  return default.get_config()


def test_product_varies_the_last_key_fastest():
  assert sweep_spec.product(a=[1, 2], b=["x", "y", "z"]) == [
      {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
      {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]
  assert list(sweep_spec.product(b=[1], a=[2])[0]) == ["b", "a"]


def test_zip_lists_pairs_values_and_rejects_unequal_lengths():
  assert sweep_spec.zip_lists(a=[1, 2], b=[3, 4]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
  with pytest.raises(SweepError, match=r"equal length.*a: 2, b: 3"):
    sweep_spec.zip_lists(a=[1, 2], b=[3, 4, 5])


def test_with_seeds_count_and_list():
  assert sweep_spec.with_seeds([{"a": 1}, {"a": 2}], 2) == [
      {"a": 1, "seed": 0}, {"a": 1, "seed": 1}, {"a": 2, "seed": 0}, {"a": 2, "seed": 1}]
  assert sweep_spec.with_seeds([{}], [7, 3]) == [{"seed": 7}, {"seed": 3}]
  for bad in (0, [], [1, 1], True):
    with pytest.raises(SweepError):
      sweep_spec.with_seeds([{"a": 1}], bad)


def test_with_seeds_rejects_a_member_with_a_seed():
  with pytest.raises(SweepError, match="already sets seed=5"):
    sweep_spec.with_seeds([{"a": 1}, {"seed": 5}], 2)


def test_concat_keeps_order():
  assert sweep_spec.concat([{"a": 1}], [{"b": 2}, {"b": 3}]) == [{"a": 1}, {"b": 2}, {"b": 3}]


def test_helpers_reject_empty_and_bare_values():
  with pytest.raises(SweepError, match="empty list"):
    sweep_spec.product(beta=[])
  with pytest.raises(SweepError, match="list of values"):
    sweep_spec.product(dataset="mnist")


def test_parse_inline_values_times_seeds_in_order():
  members = sweep_spec.parse_inline("beta=0.5,1,2,4", seeds=3)
  assert len(members) == 12
  assert members[:4] == [{"beta": 0.5, "seed": 0}, {"beta": 0.5, "seed": 1}, {"beta": 0.5, "seed": 2},
                         {"beta": 1, "seed": 0}]
  assert members[-1] == {"beta": 4, "seed": 2}


def test_parse_inline_two_keys(config):
  members = sweep_spec.parse_inline("beta=0.5,1; learning_rate=1e-3,3e-3", config=config)
  assert members == [{"beta": 0.5, "learning_rate": 1e-3}, {"beta": 0.5, "learning_rate": 3e-3},
                     {"beta": 1.0, "learning_rate": 1e-3}, {"beta": 1.0, "learning_rate": 3e-3}]


def test_parse_inline_coerces_to_the_config_types(config):
  members = sweep_spec.parse_inline("beta=1;latent_dim=4,8.0;activation=relu,'gelu';widths=(16,)|[32,16]",
                                    config=config)
  first = members[0]
  assert type(first["beta"]) is float and first["beta"] == 1.0
  assert {m["latent_dim"] for m in members} == {4, 8} and all(type(m["latent_dim"]) is int for m in members)
  assert [m["activation"] for m in members[:4:2]] == ["relu", "gelu"]
  assert {m["widths"] for m in members} == {(16,), (32, 16)}
  # A string key keeps what was written, even when it reads as a number.
  assert sweep_spec.parse_inline("dataset=1e3", config=config) == [{"dataset": "1e3"}]


def test_parse_inline_bool_spellings():
  config = default.get_config()
  config.unlock()
  config.flag = False  # The default config's only bool, overwrite, cannot be swept.
  for text, values in (("true,False", [True, False]), ("True,false", [True, False]), ("1,0", [True, False])):
    assert [m["flag"] for m in sweep_spec.parse_inline(f"flag={text}", config=config)] == values
  with pytest.raises(SweepError, match="true or false"):
    sweep_spec.parse_inline("flag=yes", config=config)


def test_parse_inline_without_config_reads_literals_else_strings():
  assert sweep_spec.parse_inline("a=1,2.5,relu;w=(16,)|(32, 16)") == [
      {"a": 1, "w": (16,)}, {"a": 1, "w": (32, 16)}, {"a": 2.5, "w": (16,)}, {"a": 2.5, "w": (32, 16)},
      {"a": "relu", "w": (16,)}, {"a": "relu", "w": (32, 16)}]


def test_parse_inline_syntax_errors(config):
  for text, message in (("", "empty"), ("beta", "not key=v1,v2"), ("beta=", "no values for beta"),
                        ("beta=1,,2", "empty value"), ("beta=1;beta=2", "twice")):
    with pytest.raises(SweepError, match=message):
      sweep_spec.parse_inline(text, config=config)


def test_unknown_key_suggests_the_closest(config):
  with pytest.raises(SweepError, match=r"unknown config key 'bta'.*did you mean 'beta'\?"):
    sweep_spec.parse_inline("bta=1,2", config=config)
  with pytest.raises(SweepError, match=r"unknown config key 'learning_rat'.*'learning_rate'"):
    sweep_spec.validate([{"learning_rat": 1e-3}], config)


@pytest.mark.parametrize("member, message", [
    ({"beta": "abc"}, r"beta='abc' in the sweep must be a number"),
    ({"beta": True}, r"must be a number"),
    ({"latent_dim": 2.5}, r"latent_dim=2.5 in the sweep must be an int"),
    ({"latent_dim": "8"}, r"must be an int"),
    ({"activation": 3}, r"must be a string"),
    ({"widths": 16}, r"must be a tuple"),
    ({"widths": (16, 2.5)}, r"widths\[1\]=2.5 .* must be an int"),
])
def test_wrong_types(config, member, message):
  with pytest.raises(SweepError, match=message):
    sweep_spec.validate([member], config)


def test_validate_coerces(config):
  out = sweep_spec.validate([{"beta": 1, "latent_dim": 4.0, "widths": [32, 16], "seed": 2}], config)
  assert out == [{"beta": 1.0, "latent_dim": 4, "widths": (32, 16), "seed": 2}]
  assert type(out[0]["beta"]) is float and type(out[0]["latent_dim"]) is int


def test_validate_rejects_empty_sweeps(config):
  with pytest.raises(SweepError, match="no members"):
    sweep_spec.validate([], config)


def test_seed_list_and_seed_key_together(config):
  with pytest.raises(SweepError, match="--seeds"):
    sweep_spec.parse_inline("beta=1;seed=0,1", seeds=2, config=config)
  # Without --seeds, seeds may be swept as a key.
  assert len(sweep_spec.parse_inline("beta=1;seed=0,1", config=config)) == 2


def test_duplicates(config):
  with pytest.raises(SweepError, match=r"members 0 and 2 are the same"):
    sweep_spec.validate([{"beta": 1}, {"beta": 2}, {"beta": 1.0}], config)
  with pytest.raises(SweepError, match="same override"):
    sweep_spec.validate([{"widths": (16,), "beta": 1.0}, {"beta": 1.0, "widths": [16]}], config)
  with pytest.raises(SweepError, match="same override"):
    sweep_spec.parse_inline("beta=1,1.0", config=config)


@pytest.mark.parametrize("key", sorted(sweep_spec.UNSWEEPABLE))
def test_unsweepable_keys(config, key):
  with pytest.raises(SweepError, match=f"{key} is a run setting"):
    sweep_spec.validate([{key: config[key]}], config)


def test_unsweepable_set():
  assert sweep_spec.UNSWEEPABLE == {"overwrite", "log_every", "eval_every", "checkpoint_every", "num_pictures"}


def _write(tmp_path, text: str) -> str:
  path = tmp_path / "sweep.py"
  path.write_text(text)
  return str(path)


def test_load_file_good(tmp_path, config):
  path = _write(tmp_path, "from ae_jax import sweep_spec\n\n"
                "def get_sweep():\n  return sweep_spec.with_seeds(sweep_spec.product(beta=[1, 2]), 2)\n")
  members = sweep_spec.load_file(path)
  assert members == [{"beta": 1, "seed": 0}, {"beta": 1, "seed": 1}, {"beta": 2, "seed": 0},
                     {"beta": 2, "seed": 1}]
  assert len(sweep_spec.validate(members, config)) == 4


def test_load_file_example_sweep(config):
  members = sweep_spec.load_file(os.path.join(ROOT, "experiments", "sweeps", "vae_beta.py"))
  assert len(sweep_spec.validate(members, config)) == 12
  assert sweep_spec.swept_keys(members) == ["beta", "seed"]


def test_load_file_missing(tmp_path):
  with pytest.raises(SweepError, match=r"sweep file .*nope\.py not found"):
    sweep_spec.load_file(str(tmp_path / "nope.py"))


def test_load_file_syntax_error_names_the_line(tmp_path):
  path = _write(tmp_path, "def get_sweep():\n  return [\n\nx = = 1\n")
  with pytest.raises(SweepError) as info:
    sweep_spec.load_file(path)
  message = str(info.value)
  assert path in message and "SyntaxError" in message and "\n" not in message
  assert re.search(r"line [24]\b", message), message


def test_load_file_exception_at_import(tmp_path):
  path = _write(tmp_path, "X = 1\nY = 1 / 0\n")
  with pytest.raises(SweepError, match=r"line 2: import failed: ZeroDivisionError"):
    sweep_spec.load_file(path)


def test_load_file_without_get_sweep(tmp_path):
  with pytest.raises(SweepError, match=r"defines no get_sweep\(\)"):
    sweep_spec.load_file(_write(tmp_path, "SWEEP = []\n"))


def test_load_file_get_sweep_raises(tmp_path):
  path = _write(tmp_path, "from ae_jax import sweep_spec\n\ndef get_sweep():\n"
                "  return sweep_spec.zip_lists(a=[1], b=[1, 2])\n")
  with pytest.raises(SweepError, match=r"line 4: get_sweep\(\) raised SweepError: zip_lists needs"):
    sweep_spec.load_file(path)


@pytest.mark.parametrize("returned, got", [("[]", "an empty list"), ("{'beta': 1}", "dict"),
                                           ("[{'beta': 1}, 2]", "a list with a int")])
def test_load_file_bad_return(tmp_path, returned, got):
  with pytest.raises(SweepError, match=f"returned {got}; it must return a non-empty list"):
    sweep_spec.load_file(_write(tmp_path, f"def get_sweep():\n  return {returned}\n"))


def test_swept_keys_first_seen_order():
  assert sweep_spec.swept_keys([{"b": 1}, {"a": 1, "b": 2}, {"c": 0, "a": 2}]) == ["b", "a", "c"]


def test_member_name_examples():
  assert sweep_spec.member_name({"seed": 1, "beta": 0.5}, ["beta", "seed"]) == "beta=0.5,seed=1"
  assert sweep_spec.member_name({"learning_rate": 1e-3, "widths": (32, 16)}, ["widths", "learning_rate"]) == (
      "widths=32x16,learning_rate=0.001")
  assert sweep_spec.member_name({"activation": "gelu"}, ["activation"]) == "activation=gelu"
  assert sweep_spec.member_name({}, ["beta"]) == "base"


def test_member_names_are_distinct_and_folder_safe(config):
  members = sweep_spec.concat(
      sweep_spec.with_seeds(sweep_spec.product(beta=[0.1234567, 0.1234568, 1e-5, 1.0, 10.0]), 2),
      sweep_spec.product(widths=[(16,), (1, 6), (16, 32), (163, 2), ()]),
      sweep_spec.product(dataset=["a b", "a_b", "a/b", "a,seed=1", "1", "npz:/data/x.npz"]),
      sweep_spec.product(dataset=["x" * 200, "x" * 199 + "y"]),
  )
  members = sweep_spec.validate(members, config)
  keys = sweep_spec.swept_keys(members)
  names = [sweep_spec.member_name(m, keys) for m in members]
  assert len(set(names)) == len(names), names
  for name in names:
    assert re.fullmatch(r"[A-Za-z0-9._=,+-]+", name) and name not in (".", ".."), name
    assert len(name) <= sweep_spec.MAX_NAME_LENGTH
  assert names == [sweep_spec.member_name(m, keys) for m in members]  # Deterministic.


def test_member_name_floats_keep_their_distinguishing_digits():
  assert sweep_spec.member_name({"beta": 0.1234567}, ["beta"]) == "beta=0.1234567"
  assert sweep_spec.member_name({"beta": 1e-05}, ["beta"]) == "beta=1e-05"


# Search spaces: drawn members.

LR, BETA = sweep_spec.loguniform(1e-4, 1e-2), sweep_spec.uniform(0.25, 4)


def test_draws_are_fixed_by_the_search_seed():
  assert sweep_spec.sample(3, learning_rate=LR, beta=BETA) == [
      {"learning_rate": 0.0003079, "beta": 1.67}, {"learning_rate": 0.001561, "beta": 2.461},
      {"learning_rate": 0.006115, "beta": 1.493}]
  assert sweep_spec.sample(3, search_seed=1, learning_rate=LR, beta=BETA)[0] == {"learning_rate": 0.0001853,
                                                                                  "beta": 3.166}
  assert sweep_spec.sample(4, latent_dim=sweep_spec.randint(2, 8)) == [
      {"latent_dim": 8}, {"latent_dim": 2}, {"latent_dim": 6}, {"latent_dim": 7}]


def test_drawn_floats_have_four_significant_digits_and_short_names():
  members = sweep_spec.sample(50, learning_rate=LR, beta=BETA)
  for member in members:
    for value in member.values():
      assert float(f"{value:.4g}") == value
    name = sweep_spec.member_name(member, ["learning_rate", "beta"])
    assert len(name) <= 36 and "-" not in name.replace("e-", ""), name  # Readable, no hash appended.


def test_loguniform_is_in_range_and_uniform_in_the_log():
  values = [m["x"] for m in sweep_spec.sample(2000, x=LR)]
  assert all(1e-4 <= v <= 1e-2 for v in values)
  median = sorted(values)[1000]
  assert 8e-4 < median < 1.25e-3, median
  below = sum(v < 1e-3 for v in values) / len(values)
  assert 0.45 < below < 0.55, below
  uniform = sorted(m["x"] for m in sweep_spec.sample(2000, x=BETA))
  assert 0.25 <= uniform[0] and uniform[-1] <= 4 and 1.9 < uniform[1000] < 2.35


def test_randint_includes_both_ends_and_choice_draws_every_option():
  assert {m["k"] for m in sweep_spec.sample(7, k=sweep_spec.randint(2, 8))} == set(range(2, 9))
  assert sorted(m["a"] for m in sweep_spec.sample(3, a=sweep_spec.choice("relu", "gelu", "tanh"))) == [
      "gelu", "relu", "tanh"]


def test_more_members_with_the_same_seed_keep_the_earlier_ones():
  assert sweep_spec.sample(8, learning_rate=LR, beta=BETA)[:5] == sweep_spec.sample(5, learning_rate=LR, beta=BETA)
  grid = sweep_spec.sample(3, learning_rate=LR, widths=[(16,), (32,)])
  assert sweep_spec.sample(2, learning_rate=LR, widths=[(16,), (32,)]) == grid[:4]
  # A key's draws depend on its name, not on the other keys: adding beta keeps the learning rates.
  assert [m["learning_rate"] for m in sweep_spec.sample(5, learning_rate=LR, beta=BETA)] == [
      m["learning_rate"] for m in sweep_spec.sample(5, learning_rate=LR)]


def test_sample_crosses_listed_keys_with_the_draws_and_seeds():
  members = sweep_spec.with_seeds(sweep_spec.sample(2, learning_rate=LR, beta=[1.0, 4.0]), 2)
  assert len(members) == 8 and all(list(m) == ["learning_rate", "beta", "seed"] for m in members)
  first, second = sweep_spec.sample(2, learning_rate=LR)
  assert [(m["learning_rate"], m["beta"], m["seed"]) for m in members[:4]] == [
      (first["learning_rate"], 1.0, 0), (first["learning_rate"], 1.0, 1), (first["learning_rate"], 4.0, 0),
      (first["learning_rate"], 4.0, 1)]
  assert members[4]["learning_rate"] == second["learning_rate"]
  assert len(sweep_spec.concat(sweep_spec.sample(2, beta=BETA), sweep_spec.product(beta=[1.0]))) == 3


def test_draws_are_distinct():
  members = sweep_spec.sample(4, a=sweep_spec.choice(1, 2), b=sweep_spec.choice("x", "y"))
  assert len({(m["a"], m["b"]) for m in members}) == 4
  with pytest.raises(SweepError, match=r"5 members asked of a space of 4 distinct values.*at most 4"):
    sweep_spec.sample(5, a=sweep_spec.choice(1, 2), b=sweep_spec.choice("x", "y"))
  with pytest.raises(SweepError, match="too few values for 3 members"):
    sweep_spec.sample(3, beta=sweep_spec.uniform(1, 1.001))  # 1 and 1.001 only, at 4 digits.


def test_distributions_print_as_written():
  assert str(LR) == "loguniform(0.0001, 0.01)" and str(BETA) == "uniform(0.25, 4)"
  assert str(sweep_spec.randint(2, 8)) == "randint(2, 8)"
  assert str(sweep_spec.choice("relu", 2, (16,))) == "choice('relu', 2, (16,))"


@pytest.mark.parametrize("make, message", [
    (lambda: sweep_spec.uniform(4, 0.25), r"uniform\(4, 0.25\) needs low < high"),
    (lambda: sweep_spec.uniform(1, 1), "needs low < high"),
    (lambda: sweep_spec.loguniform(0, 1e-2), r"needs 0 < low .*e.g. loguniform\(1e-05, 0.01\)"),
    (lambda: sweep_spec.loguniform(-1, 1), "needs 0 < low"),
    (lambda: sweep_spec.uniform(0, float("inf")), "two finite numbers"),
    (lambda: sweep_spec.uniform("0", 1), "two finite numbers"),
    (lambda: sweep_spec.randint(1, 2.5), "two ints"),
    (lambda: sweep_spec.choice("relu"), "at least two options"),
    (lambda: sweep_spec.choice(1, 1.0), "repeats an option"),
    (lambda: sweep_spec.sample(0, beta=BETA), "at least 1"),
    (lambda: sweep_spec.sample(2, beta=[1, 2]), r"no distribution.*product\(\)"),
    (lambda: sweep_spec.sample(2, search_seed=1.5, beta=BETA), "search_seed=1.5 must be an int"),
    (lambda: sweep_spec.sample(2, beta=BETA, widths=[]), "empty list"),
])
def test_bad_distributions(make, message):
  with pytest.raises(SweepError, match=message):
    make()


def test_parse_inline_draws_members(config):
  members = sweep_spec.parse_inline("learning_rate=loguniform(1e-4,1e-2);beta=uniform(0.25,4)", members=3,
                                    config=config)
  assert members == sweep_spec.sample(3, learning_rate=LR, beta=BETA)
  assert sweep_spec.parse_inline("beta=uniform(0.25,4)", members=2, search_seed=1, config=config) == (
      sweep_spec.sample(2, search_seed=1, beta=BETA))
  crossed = sweep_spec.parse_inline("activation=choice(relu,gelu);latent_dim=randint(2,8);widths=(16,)|(32,16)",
                                    members=2, seeds=2, config=config)
  assert len(crossed) == 8 and {m["widths"] for m in crossed} == {(16,), (32, 16)}
  assert all(type(m["latent_dim"]) is int and 2 <= m["latent_dim"] <= 8 for m in crossed)
  # A float key takes randint's ints as floats; a tuple key chooses among '|'-separated tuples.
  assert all(type(m["beta"]) is float for m in sweep_spec.parse_inline("beta=randint(1,9)", members=3, config=config))
  assert {m["widths"] for m in sweep_spec.parse_inline("widths=choice((16,)|(32,16))", members=2, config=config)} == {
      (16,), (32, 16)}


def test_the_example_search_file_is_the_inline_search(config):
  members = sweep_spec.load_file(os.path.join(ROOT, "experiments", "sweeps", "vae_search.py"))
  assert len(members) == 27
  assert members == sweep_spec.parse_inline("learning_rate=loguniform(1e-4,1e-2);beta=uniform(0.25,4)",
                                            members=27, config=config)


def test_search_record():
  record = sweep_spec.search_record("learning_rate=loguniform(1e-4,1e-2);beta=1,4", members=5, search_seed=2)
  assert record == {"members": 5, "search_seed": 2,
                    "spaces": {"learning_rate": "loguniform(0.0001, 0.01)", "beta": [1, 4]}}
  assert sweep_spec.search_record("beta=1,4", members=None) is None


@pytest.mark.parametrize("text, members, message", [
    ("beta=uniform(4,0.25)", 3, r"--sweep beta=uniform\(4,0.25\): .*needs low < high"),
    ("learning_rate=loguniform(0,1e-2)", 3, r"--sweep learning_rate=.*needs 0 < low"),
    ("learning_rate=loguniform(-1e-3,1e-2)", 3, "needs 0 < low"),
    ("family=uniform(0,1)", 3, r"family is a string .*choice\(a,b\)"),
    ("widths=uniform(16,64)", 3, "widths is a tuple"),
    ("latent_dim=uniform(2,8)", 3, r"latent_dim is an int; draw it with randint\(low,high\), e.g. randint\(2,8\)"),
    ("latent_dim=loguniform(2,64)", 3, "latent_dim is an int"),
    ("beta=normal(0,1)", 3, r"unknown distribution 'normal'.*uniform\(low,high\), loguniform"),
    ("beta=unifrom(0,1)", 3, "did you mean uniform"),
    ("beta=uniform(1)", 3, r"uniform takes two numbers, low and high, e.g. beta=uniform\(1,4\)"),
    ("beta=uniform(a,b)", 3, "takes two numbers"),
    ("beta=1,uniform(0,1)", 3, "a distribution stands alone"),
    ("beta=choice(1)", 3, r"--sweep beta=choice\(1\): .*at least two options"),
    ("latent_dim=choice(2,2.5)", 3, r"--sweep latent_dim=choice.*latent_dim=2.5 in the sweep must be an int"),
    ("activation=choice(relu,gelu)", 3, "3 members asked of a space of 2"),
    ("beta=uniform(0.25,4)", None, r"--sweep draws beta=uniform\(0.25, 4\): pass --members=N"),
    ("beta=1,2", 2, r"--members=2 needs a drawn key.*drop --members"),
    ("beta=uniform(0.25,4);seed=0,1", 2, None),  # Fine without --seeds...
])
def test_parse_inline_bad_searches(config, text, members, message):
  if message is None:
    assert len(sweep_spec.parse_inline(text, members=members, config=config)) == 4
    with pytest.raises(SweepError, match="--seeds"):  # ...but not with it.
      sweep_spec.parse_inline(text, members=members, seeds=2, config=config)
    return
  with pytest.raises(SweepError, match=message) as info:
    sweep_spec.parse_inline(text, members=members, config=config)
  assert "\n" not in str(info.value)


# A user term's weight: `weight/<name>`.

TERM = "tests.test_families:code_energy"


def test_a_user_terms_weight_is_swept_as_a_number_inline(config):
  config.extra_terms = f"{TERM}=0.25"
  members = sweep_spec.parse_inline("weight/code_energy=0.001,0.01,1", seeds=2, config=config)
  assert [m["weight/code_energy"] for m in members] == [0.001, 0.001, 0.01, 0.01, 1.0, 1.0]
  assert all(type(m["weight/code_energy"]) is float for m in members)  # 1 is the number 1.0, not a string.
  names = [sweep_spec.member_name(m, ["weight/code_energy", "seed"]) for m in members]
  assert names[:2] == ["weight.code_energy=0.001,seed=0", "weight.code_energy=0.001,seed=1"]  # No hash suffix.
  assert sweep_spec.current_value("weight/code_energy", config) == 0.25
  drawn = sweep_spec.parse_inline("weight/code_energy=loguniform(1e-3,1e-1)", members=3, config=config)
  assert all(1e-3 <= m["weight/code_energy"] <= 1e-1 for m in drawn)


def test_a_sweep_file_sweeps_a_weight_and_apply_writes_it_into_extra_terms(tmp_path, config):
  config.extra_terms = f"{TERM}=0.25,tests.test_families:other=2"
  path = tmp_path / "weights.py"
  path.write_text("from ae_jax import sweep_spec\n\ndef get_sweep():\n"
                  "  return sweep_spec.product(**{'weight/code_energy': [0.1, 1], 'beta': [1.0]})\n")
  members = sweep_spec.validate(sweep_spec.load_file(str(path)), config)
  assert members == [{"weight/code_energy": 0.1, "beta": 1.0}, {"weight/code_energy": 1.0, "beta": 1.0}]
  sweep_spec.apply(config, members[0])
  assert config.extra_terms == f"{TERM}=0.1,tests.test_families:other=2.0" and config.beta == 1.0
  assert sweep_spec.current_value("weight/code_energy", config) == 0.1
  assert sweep_spec.current_value("weight/other", config) == 2.0


def test_a_weight_follows_the_members_own_extra_terms(config):
  members = sweep_spec.validate([{"extra_terms": f"{TERM}=1", "weight/code_energy": 0.5}], config)
  sweep_spec.apply(config, members[0])
  assert config.extra_terms == f"{TERM}=0.5"


@pytest.mark.parametrize("extra_terms, key, message", [
    ("", "weight/tv", r"no term named 'tv'; add the term first, e.g. --config.extra_terms=my_terms:tv=0.01"),
    (f"{TERM}=0.25", "weight/code_energi", r"no term named 'code_energi'; the config's term weights are "
     r"weight/code_energy"),
])
def test_a_weight_of_a_term_the_config_lacks_is_refused(config, extra_terms, key, message):
  config.extra_terms = extra_terms
  with pytest.raises(SweepError, match=message):
    sweep_spec.parse_inline(f"{key}=0.1,1", config=config)
  with pytest.raises(SweepError, match=message):
    sweep_spec.validate([{key: 0.1}], config)
  config.extra_terms = f"{TERM}=0.25"
  with pytest.raises(SweepError, match="must be a number"):
    sweep_spec.validate([{"weight/code_energy": "big"}], config)
