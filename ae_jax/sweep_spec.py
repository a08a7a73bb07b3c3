"""What a sweep trains: a list of members, each a dict of config overrides, checked before any work.

A sweep file (experiments/sweeps/*.py) defines `get_sweep()` returning the members, built with the
helpers here; the command line's short form is `--sweep='beta=0.5,1,2,4' --seeds=3` (`parse_inline`).
A search draws members instead of listing them (`sample`, or `--sweep='beta=uniform(0.25,4)' --members=20`):
the draws are seeded and rounded to 4 significant digits, so a drawn member is an ordinary member.
`validate` checks every member against the base config and coerces values to its types, so a typo
or a wrong type fails in one line (SweepError) before anything compiles, not after an hour of
training. `member_name` gives each member the folder name its results go under.

A user term's weight is a key too: `weight/<name>` (the term `name` of `config.extra_terms`) is swept as
a number (`--sweep='weight/tv=0.001,0.01,0.1'`); `apply` writes it into the member's `extra_terms`.
"""

import ast
from collections.abc import Sequence
import difflib
import hashlib
import importlib.util
import itertools
import math
import os
import re
import traceback
from typing import Any

from ae_jax import errors
from ae_jax import hparams
from ae_jax import search_space

# Run settings, not experiment settings: every member of a sweep shares them.
UNSWEEPABLE = frozenset({"overwrite", "log_every", "eval_every", "checkpoint_every", "num_pictures"})
# --search: every member to the end, successive halving (ae_jax.search) or population-based training (ae_jax.pbt).
SEARCHES = ("grid", "halving", "pbt")
DEFAULT_ETA = 3  # --eta: the fraction 1/eta of the settings that goes on at each rung of halving.
SEED_KEY = "seed"
MAX_NAME_LENGTH = 100
_BOOLS = {"true": True, "True": True, "1": True, "false": False, "False": False, "0": False}
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
WEIGHT_PREFIX = hparams.EXTRA_PREFIX  # "weight/<name>": the weight of the user term <name>.


SweepError = errors.SweepError
_check_options, _canonical, _format = search_space.check_options, search_space.canonical, search_space.format_value


def _one_line(text: str) -> str:
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return " ".join(lines)


# Helpers for sweep files (the search-space ones are `ae_jax.search_space`'s, named here too).

sample, uniform, loguniform, randint, choice = (search_space.sample, search_space.uniform, search_space.loguniform,
                                                search_space.randint, search_space.choice)


def product(**values: Sequence[Any]) -> list[dict[str, Any]]:
  """The cartesian product of the value lists: keys in the given order, the last varying fastest."""
  for key, options in values.items():
    _check_options(key, options)
  keys = list(values)
  return [dict(zip(keys, combo)) for combo in itertools.product(*(list(v) for v in values.values()))]


def zip_lists(**values: Sequence[Any]) -> list[dict[str, Any]]:
  """Member i takes the i-th value of every list; the lists must have the same length."""
  for key, options in values.items():
    _check_options(key, options)
  lengths = {key: len(options) for key, options in values.items()}
  if len(set(lengths.values())) > 1:
    listed = ", ".join(f"{key}: {n}" for key, n in lengths.items())
    raise SweepError(f"zip_lists needs lists of equal length, got {listed}; use product() for all "
                     "combinations")
  keys = list(values)
  return [dict(zip(keys, combo)) for combo in zip(*(list(v) for v in values.values()))]


def with_seeds(members: list[dict[str, Any]], seeds: int | Sequence[int]) -> list[dict[str, Any]]:
  """Every member once per seed (`seeds=3`: seeds 0, 1, 2), the seed varying fastest."""
  seed_list = _seed_list(seeds)
  for i, member in enumerate(members):
    if SEED_KEY in member:
      raise SweepError(f"member {i} already sets seed={member[SEED_KEY]!r}; either list seeds in the "
                       "members or ask for seeds, not both")
  return [{**member, SEED_KEY: seed} for member in members for seed in seed_list]


def concat(*member_lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The members of every list, in order (e.g. two products with different keys)."""
  return [dict(member) for members in member_lists for member in members]


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
  """`seeds` as a list: n means 0..n-1; a list must be distinct ints."""
  if isinstance(seeds, bool):
    raise SweepError(f"seeds={seeds!r} must be a count (e.g. 3) or a list of ints")
  if isinstance(seeds, int):
    if seeds < 1:
      raise SweepError(f"seeds={seeds} must be at least 1")
    return list(range(seeds))
  seed_list = list(seeds)
  if not seed_list:
    raise SweepError("seeds is an empty list; give a count (e.g. 3) or at least one seed")
  if not all(isinstance(s, int) and not isinstance(s, bool) for s in seed_list):
    raise SweepError(f"seeds={seed_list!r} must all be ints")
  if len(set(seed_list)) != len(seed_list):
    raise SweepError(f"seeds={seed_list!r} repeats a seed; list each once")
  return seed_list


# The command-line form.


def parse_inline(text: str, *, seeds: int | None = None, config=None, members: int | None = None,
                 search_seed: int = 0) -> list[dict[str, Any]]:
  """Members from `--sweep`: the product of every key's values, times `seeds` (0..seeds-1) if given.

  Keys are separated by ';', values by ',': 'beta=0.5,1;learning_rate=1e-3,3e-3'. Values of a
  tuple-valued key (or, without a config, values starting with '(' or '[') are separated by '|'
  instead and read as Python literals: 'widths=(16,)|(32,16)'. With `config`, values are read as the
  type of the key's current value (int, float, bool as true/false/True/False/1/0, str as written)
  and the members are checked by `validate`; without it, as Python literals, else as strings.
  Values containing ',' or ';' need a sweep file.

  A key may be drawn instead: 'learning_rate=loguniform(1e-4,1e-2);beta=uniform(0.25,4)', also
  randint(low,high) and choice(a,b,...) (options separated as a list's values). Then `members` draws
  are made (`sample`, seeded by `search_seed`) and crossed with the listed keys' product; `members`
  is an error without a drawn key, and a drawn key needs it.
  """
  spaces = parse_spaces(text, config=config)
  drawn = [key for key, space in spaces.items() if isinstance(space, search_space.Distribution)]
  if drawn and members is None:
    raise SweepError(f"--sweep draws {drawn[0]}={spaces[drawn[0]]}: pass --members=N, the number of members to "
                     "draw (e.g. --members=20)")
  if members is not None and not drawn:
    raise SweepError(f"--members={members} needs a drawn key, e.g. --sweep='learning_rate=loguniform(1e-4,1e-2)'; "
                     "a --sweep of listed values is a grid whose members are all listed: drop --members")
  if seeds is not None and SEED_KEY in spaces:
    raise SweepError("--sweep lists seed and --seeds is set; use one of them")
  out = search_space.sample(members, search_seed=search_seed, **spaces) if drawn else product(**spaces)
  if seeds is not None:
    out = with_seeds(out, seeds)
  return validate(out, config) if config is not None else out


def parse_spaces(text: str, *, config=None) -> dict[str, list[Any] | search_space.Distribution]:
  """Each `--sweep` key's listed values or distribution, keys in the order written (see `parse_inline`)."""
  terms = [term.strip() for term in text.split(";") if term.strip()]
  if not terms:
    raise SweepError("--sweep is empty; write key=v1,v2 (e.g. --sweep='beta=0.5,1,2')")
  values: dict[str, list[Any] | search_space.Distribution] = {}
  for term in terms:
    key, sep, listed = term.partition("=")
    key, listed = key.strip(), listed.strip()
    if not sep or not key:
      raise SweepError(f"--sweep term {term!r} is not key=v1,v2 (e.g. beta=0.5,1,2)")
    if key in values:
      raise SweepError(f"--sweep lists {key} twice; put all its values in one term: {key}=v1,v2")
    if config is not None:
      _check_key(key, config)
    current = current_value(key, config) if config is not None else None
    tuple_valued = isinstance(current, (tuple, list)) or (config is None and listed.startswith(("(", "[")))
    if not listed:
      raise SweepError(f"--sweep has no values for {key}; write {key}=v1,v2")
    call = _CALL.fullmatch(listed)
    if call:
      values[key] = _parse_distribution(key, call[1], call[2], current, config=config, tuple_valued=tuple_valued)
      continue
    if _CALL_INSIDE.search(listed):
      raise SweepError(f"--sweep {key}={listed}: a distribution stands alone, not in a list of values; write "
                       f"{key}=uniform(low,high) or {key}=choice(a,b)")
    values[key] = _parse_list(key, listed, current, config=config, tuple_valued=tuple_valued)
  return values


_CALL = re.compile(r"([A-Za-z_]\w*)\((.*)\)", re.DOTALL)
_CALL_INSIDE = re.compile(r"\b(" + "|".join(search_space.DISTRIBUTIONS) + r")\(")


def _parse_list(key: str, listed: str, current: Any, *, config, tuple_valued: bool) -> list[Any]:
  separator = "|" if tuple_valued else ","
  items = [item.strip() for item in listed.split(separator)]
  if not all(items):
    raise SweepError(f"--sweep {key}={listed} has an empty value; separate values with single '{separator}'")
  return [_parse_value(key, item, current, known=config is not None) for item in items]


def _parse_distribution(key: str, name: str, args: str, current: Any, *, config,
                        tuple_valued: bool) -> search_space.Distribution:
  """`name(args)` of `--sweep key=name(args)`, checked against the config's value of `key` when known."""
  written = f"--sweep {key}={name}({args})"
  if name not in search_space.DISTRIBUTIONS:
    close = difflib.get_close_matches(name, list(search_space.DISTRIBUTIONS), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise SweepError(f"{written}: unknown distribution {name!r}; {hint}draw with uniform(low,high), "
                     "loguniform(low,high), randint(low,high) or choice(a,b,...)")
  try:
    if name == "choice":
      options = []
      if args.strip():
        options = _parse_list(key, args.strip(), current, config=config, tuple_valued=tuple_valued)
      if config is not None and current is not None:
        options = [coerce(key, option, current) for option in options]
    else:
      options = [_parse_value(key, item.strip(), None, known=False) for item in args.split(",")]
      if len(options) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in options):
        raise SweepError(f"{name} takes two numbers, low and high, e.g. {key}={name}(1,4)")
    space = search_space.DISTRIBUTIONS[name](*options)
  except SweepError as e:
    raise SweepError(f"{written}: {e}") from None
  if config is not None and current is not None and space.numeric:
    if isinstance(current, bool) or not isinstance(current, (int, float)):
      raise SweepError(f"{written}: {key} is {_type_name(current)} ({current!r}), not a number to draw from a "
                       f"range; list its values ({key}=a,b) or draw one with choice(a,b)")
    if isinstance(current, int) and not isinstance(space, search_space.RandInt):
      raise SweepError(f"{written}: {key} is an int; draw it with randint(low,high), e.g. "
                       f"randint({math.ceil(space.low)},{math.floor(space.high)})")
  return space


def search_record(text: str, *, members: int | None, search_seed: int = 0, config=None) -> dict[str, Any] | None:
  """What a drawn `--sweep` was, for sweep.json: the spaces, the count and the seed; None for a grid."""
  spaces = parse_spaces(text, config=config)
  if not any(isinstance(space, search_space.Distribution) for space in spaces.values()):
    return None
  return {"members": members, "search_seed": search_seed,
          "spaces": {key: str(space) if isinstance(space, search_space.Distribution) else space
                     for key, space in spaces.items()}}


def _parse_value(key: str, text: str, current: Any, *, known: bool) -> Any:
  """One inline value: typed by the config's current value when `known`, else a literal or str."""
  if known and isinstance(current, bool):
    if text not in _BOOLS:
      raise SweepError(f"--sweep {key}={text!r} must be true or false (the config's {key} is {current})")
    return _BOOLS[text]
  if known and isinstance(current, str):
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
      return text[1:-1]
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return text  # A bare word; validate says if the key wants another type.


# Checks.


def validate(members: list[dict[str, Any]], config) -> list[dict[str, Any]]:
  """The members with values coerced to the config's types; SweepError for the first problem."""
  if not isinstance(members, list) or not members:
    raise SweepError("the sweep has no members; give at least one override dict")
  out = []
  seen: dict[str, int] = {}
  for i, member in enumerate(members):
    if not isinstance(member, dict):
      raise SweepError(f"member {i} is {type(member).__name__} {member!r}, not a dict of config overrides")
    coerced = {}
    for key, value in member.items():
      if not isinstance(key, str):
        raise SweepError(f"member {i} has key {key!r}; keys are config key names (str)")
      extra_terms = member.get("extra_terms") if isinstance(member.get("extra_terms"), str) else None
      _check_key(key, config, extra_terms=extra_terms)
      coerced[key] = coerce(key, value, current_value(key, config, extra_terms=extra_terms))
    canonical = repr(sorted((k, _canonical(v)) for k, v in coerced.items()))
    if canonical in seen:
      raise SweepError(f"members {seen[canonical]} and {i} are the same override {coerced!r}; "
                       "remove one (for repeats, sweep seeds)")
    seen[canonical] = i
    out.append(coerced)
  return out


def term_name(key: str) -> str | None:
  """The user term a `weight/<name>` key weights; None for any other key."""
  return key[len(WEIGHT_PREFIX):] if key.startswith(WEIGHT_PREFIX) else None


def _term_weights(spec: str) -> dict[str, float]:
  try:
    return {name: weight for name, _, weight in hparams.parse_extra_terms(spec)}
  except ValueError as e:
    raise SweepError(f"--config.extra_terms: {e}") from None


def current_value(key: str, config, *, extra_terms: str | None = None) -> Any:
  """The config's value of sweep key `key`: for `weight/<name>`, the weight `extra_terms` (default: the
  config's) gives the term."""
  name = term_name(key)
  if name is None:
    return config[key]
  return _term_weights(config["extra_terms"] if extra_terms is None else extra_terms)[name]


def apply(config, overrides: dict[str, Any]) -> None:
  """Sets a member's `overrides` on `config` (a copy of the base): `weight/<name>` rewrites that term's
  weight in `config.extra_terms` (after an `extra_terms` override, if the member has one)."""
  config.update({k: v for k, v in overrides.items() if term_name(k) is None})
  for key, value in overrides.items():
    name = term_name(key)
    if name is not None:
      _check_key(key, config)
      config.extra_terms = hparams.with_weight(config.extra_terms, name, value)


def _check_key(key: str, config, *, extra_terms: str | None = None) -> None:
  name = term_name(key)
  if name is not None:
    spec = (config["extra_terms"] if "extra_terms" in config else "") if extra_terms is None else extra_terms
    weights = _term_weights(spec)
    if name not in weights:
      listed = ", ".join(WEIGHT_PREFIX + n for n in weights)
      fix = (f"the config's term weights are {listed}" if listed else
             f"add the term first, e.g. --config.extra_terms=my_terms:{name or 'tv'}=0.01")
      raise SweepError(f"sweep key {key!r}: --config.extra_terms={spec!r} has no term named {name!r}; {fix}")
    return
  if key in UNSWEEPABLE:
    raise SweepError(f"{key} is a run setting, not an experiment setting, and cannot be swept; set it "
                     f"once with --config.{key}")
  if key not in config:
    close = difflib.get_close_matches(key, [str(k) for k in config.keys()], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; sweep keys are the config's keys"
    raise SweepError(f"unknown config key {key!r} in the sweep{hint}")


def coerce(key: str, value: Any, current: Any) -> Any:
  """`value` as the type of the config's `current` value for `key`, or SweepError.

  An int is fine for a float key and an integral float for an int key; bools and strings are
  never numbers; lists become tuples for tuple keys. A key whose current value is None takes anything.
  """
  if current is None:
    return value
  want = _type_name(current)
  bad = SweepError(f"{key}={value!r} in the sweep must be {want} (the config's {key} is {current!r})")
  if isinstance(current, bool):
    if not isinstance(value, bool):
      raise bad
    return value
  if isinstance(current, int):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise bad
    if isinstance(value, float) and not (math.isfinite(value) and value == int(value)):
      raise bad
    return int(value)
  if isinstance(current, float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise bad
    return float(value)
  if isinstance(current, str):
    if not isinstance(value, str):
      raise bad
    return value
  if isinstance(current, (tuple, list)):
    if not isinstance(value, (tuple, list)):
      raise SweepError(f"{key}={value!r} in the sweep must be a tuple, e.g. (16,) (the config's {key} "
                       f"is {current!r}); inline, separate tuples with '|'")
    kinds = {type(c) for c in current}
    if len(kinds) == 1 and not isinstance(current[0], (tuple, list)):  # E.g. widths: all ints.
      element = current[0]
      return tuple(coerce(f"{key}[{j}]", v, element) for j, v in enumerate(value))
    return tuple(value)
  if not isinstance(value, type(current)):
    raise bad
  return value


def _type_name(current: Any) -> str:
  for kind, name in ((bool, "true or false"), (int, "an int"), (float, "a number"), (str, "a string")):
    if isinstance(current, kind):
      return name
  return f"a {type(current).__name__}"


# Sweep files.


def load_file(path: str) -> list[dict[str, Any]]:
  """The members a sweep file's `get_sweep()` returns; SweepError naming the file and line if not."""
  if not os.path.isfile(path):
    raise SweepError(f"sweep file {path} not found")
  name = "_ae_jax_sweep_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise SweepError(f"sweep file {path} cannot be imported; it should be a .py file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    elsewhere = e.filename and os.path.realpath(e.filename) != os.path.realpath(path)
    where = (f" (in {e.filename})" if elsewhere else "") + (f", line {e.lineno}" if e.lineno else "")
    raise SweepError(f"sweep file {path}{where}: SyntaxError: {_one_line(e.msg)}") from e
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise SweepError(f"sweep file {path}{_line_in(path, e)}: import failed: {_describe(e)}") from e
  get_sweep = getattr(module, "get_sweep", None)
  if not callable(get_sweep):
    raise SweepError(f"sweep file {path} defines no get_sweep(); add `def get_sweep(): return [...]` "
                     "returning a list of override dicts")
  try:
    members = get_sweep()
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise SweepError(f"sweep file {path}{_line_in(path, e)}: get_sweep() raised {_describe(e)}") from e
  if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
    got = (f"a list with a {type(next(m for m in members if not isinstance(m, dict))).__name__}"
           if isinstance(members, list) and members else
           "an empty list" if isinstance(members, list) else type(members).__name__)
    raise SweepError(f"sweep file {path}: get_sweep() returned {got}; it must return a non-empty list "
                     "of override dicts")
  return members


def _describe(e: BaseException) -> str:
  message = _one_line(str(e))
  return f"{type(e).__name__}: {message}" if message else type(e).__name__


def _line_in(path: str, e: BaseException) -> str:
  """', line N' of the innermost traceback frame in the sweep file, or '' if none is."""
  target = os.path.realpath(path)
  lines = [frame.lineno for frame in traceback.extract_tb(e.__traceback__)
           if os.path.realpath(frame.filename) == target]
  return f", line {lines[-1]}" if lines else ""


# Names.


def swept_keys(members: list[dict[str, Any]]) -> list[str]:
  """Keys set by any member, in first-seen order."""
  keys: dict[str, None] = {}
  for member in members:
    keys.update(dict.fromkeys(member))
  return list(keys)


def member_name(overrides: dict[str, Any], swept_keys: Sequence[str]) -> str:  # pylint: disable=redefined-outer-name
  """A short, folder-safe, deterministic name such as 'beta=0.5,seed=1'.

  Keys in `swept_keys` order (any others after, sorted); floats as :g, tuples as 16x32, strings as
  written, a user term's weight 'weight/tv' as 'weight.tv'. Characters outside [A-Za-z0-9._=,+-] become
  '_'. When that or a string value could make two members' names alike, or the name is over
  MAX_NAME_LENGTH, a hash of the exact values is appended.
  A member with no overrides is 'base'.
  """
  keys = [k for k in swept_keys if k in overrides] + sorted(k for k in overrides if k not in swept_keys)
  if not keys:
    return "base"
  readable = ",".join(f"{_label(key)}={_format(overrides[key])}" for key in keys)
  name = _UNSAFE.sub("_", readable)
  exact = ",".join(f"{key}={_canonical(overrides[key])!r}" for key in keys)
  ambiguous = name != readable or any(_ambiguous(overrides[key]) for key in keys)
  digest = hashlib.sha1(exact.encode("utf-8")).hexdigest()[:8]
  if len(name) > MAX_NAME_LENGTH:
    return f"{name[:MAX_NAME_LENGTH - len(digest) - 1]}-{digest}"
  return f"{name}-{digest}" if ambiguous else name


def _label(key: str) -> str:
  """A key as a folder name shows it: 'weight/tv' as 'weight.tv' (no config key has a '.')."""
  name = term_name(key)
  return key if name is None else f"{WEIGHT_PREFIX[:-1]}.{name}"


def _ambiguous(value: Any) -> bool:
  """Whether the formatted value could also be another value's: strings in tuples, or with , = x."""
  if isinstance(value, (tuple, list)):
    return any(isinstance(v, (str, tuple, list)) or _ambiguous(v) for v in value)
  if isinstance(value, str):
    if any(c in value for c in ",=") or value.lower() in ("true", "false", "nan", "inf", "-inf"):
      return True
    try:
      ast.literal_eval(value)  # A string that reads as a number or tuple.
      return True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
      return False
  return False
