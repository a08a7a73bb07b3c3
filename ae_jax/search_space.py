"""Search spaces: a sweep key's values drawn at random instead of listed (`sample`, `--members`).

Draws are a pure function of (search seed, member index, key), rounded to 4 significant digits, so a
drawn member is an ordinary member, more members with the same seed keep the earlier ones, and the
recorded value is exactly the one trained. JAX-free: the command line parses spaces before JAX loads.
"""

from collections.abc import Sequence
import dataclasses
import hashlib
import itertools
import math
import random
from typing import Any, ClassVar

from ae_jax import errors

SweepError = errors.SweepError


def check_options(key: str, options: Any) -> None:
  if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
    raise SweepError(f"{key}={options!r}: give a list of values, e.g. {key}=[{options!r}]")
  if not options:
    raise SweepError(f"{key} has an empty list of values; give at least one")


def canonical(value: Any) -> Any:
  """A comparable, hashable form: lists as tuples, so [16] and (16,) are the same override."""
  if isinstance(value, (list, tuple)):
    return tuple(canonical(v) for v in value)
  return value


def format_value(value: Any) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, float):
    short = f"{value:g}"
    return short if float(short) == value or not math.isfinite(value) else repr(value)
  if isinstance(value, (tuple, list)):
    return "x".join(format_value(v) for v in value) if value else "()"
  return str(value)

_MAX_ATTEMPTS = 100  # Redraws of a member that came out like an earlier one (more for small finite spaces).
DIGITS = 4  # Significant digits of a drawn float: short member names, and the recorded value is the one used.
class Distribution:
  """A key's values drawn at random (see `sample`); subclasses are frozen dataclasses."""

  name: ClassVar[str]
  numeric: ClassVar[bool] = True  # Draws numbers from a range (else from listed options).

  def draw(self, rng: random.Random) -> Any:
    raise NotImplementedError

  def size(self) -> int | None:
    """How many distinct values it draws; None for a continuous range."""
    return None


@dataclasses.dataclass(frozen=True)
class _Range(Distribution):
  """Numbers between low and high."""

  low: float
  high: float

  def __post_init__(self):
    _check_range(self)

  def __str__(self) -> str:
    return f"{self.name}({format_value(self.low)}, {format_value(self.high)})"


@dataclasses.dataclass(frozen=True)
class Uniform(_Range):
  """A float uniform in [low, high], rounded to DIGITS significant digits."""

  name: ClassVar[str] = "uniform"

  def draw(self, rng: random.Random) -> float:
    return _round(self.low + (self.high - self.low) * rng.random(), self)


@dataclasses.dataclass(frozen=True)
class LogUniform(_Range):
  """A float whose log is uniform in [log low, log high] (0 < low), rounded to DIGITS significant digits."""

  name: ClassVar[str] = "loguniform"

  def draw(self, rng: random.Random) -> float:
    low, high = math.log(self.low), math.log(self.high)
    return _round(math.exp(low + (high - low) * rng.random()), self)


@dataclasses.dataclass(frozen=True)
class RandInt(_Range):
  """An int uniform in low..high, both included (as Python's random.randint)."""

  low: int
  high: int
  name: ClassVar[str] = "randint"

  def draw(self, rng: random.Random) -> int:
    count = self.high - self.low + 1
    return self.low + min(int(rng.random() * count), count - 1)

  def size(self) -> int:
    return self.high - self.low + 1


@dataclasses.dataclass(frozen=True)
class Choice(Distribution):
  """One of the options, each as likely (categorical values: activations, structures)."""

  options: tuple[Any, ...]
  name: ClassVar[str] = "choice"
  numeric: ClassVar[bool] = False

  def __post_init__(self):
    if len(self.options) < 2:
      raise SweepError(f"{self} needs at least two options; for a single value, set it in the config instead")
    forms = [canonical(o) for o in self.options]
    if any(a == b for i, a in enumerate(forms) for b in forms[:i]):
      raise SweepError(f"{self} repeats an option; list each once")

  def draw(self, rng: random.Random) -> Any:
    return self.options[min(int(rng.random() * len(self.options)), len(self.options) - 1)]

  def size(self) -> int:
    return len(self.options)

  def __str__(self) -> str:
    shown = (format_value(o) if isinstance(o, (int, float)) and not isinstance(o, bool) else repr(o)
             for o in self.options)
    return f"choice({', '.join(shown)})"


def uniform(low: float, high: float) -> Uniform:
  """Floats uniform in [low, high] (rounded to 4 significant digits)."""
  return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
  """Floats log-uniform in [low, high], 0 < low: each decade as likely (learning rates, weights)."""
  return LogUniform(low, high)


def randint(low: int, high: int) -> RandInt:
  """Ints in low..high, both included."""
  return RandInt(low, high)


def choice(*options: Any) -> Choice:
  """One of the options, each as likely."""
  return Choice(tuple(options))


DISTRIBUTIONS = {"uniform": uniform, "loguniform": loguniform, "randint": randint, "choice": choice}


def _check_range(d: _Range) -> None:
  """SweepError unless low < high are finite numbers (ints for randint, low > 0 for loguniform)."""
  want = (int,) if isinstance(d, RandInt) else (int, float)
  if not all(isinstance(v, want) and not isinstance(v, bool) and math.isfinite(v) for v in (d.low, d.high)):
    kind = "two ints" if isinstance(d, RandInt) else "two finite numbers"
    raise SweepError(f"{d.name}({d.low!r}, {d.high!r}) needs {kind}, low and high")
  if d.low >= d.high:
    raise SweepError(f"{d.name}({format_value(d.low)}, {format_value(d.high)}) needs low < high; for a single "
                     "value, set it in the config instead")
  if isinstance(d, LogUniform) and d.low <= 0:
    low, high, lower = format_value(d.low), format_value(d.high), format_value(d.high / 1000)
    raise SweepError(f"loguniform({low}, {high}) needs 0 < low (a log range cannot reach 0); e.g. "
                     f"loguniform({lower}, {high}), or uniform for a range through 0")


def _round(value: float, d: _Range) -> float:
  """`value` to DIGITS significant digits, kept inside [low, high]: the value recorded is the one trained."""
  return float(min(max(float(f"{value:.{DIGITS}g}"), d.low), d.high))


def _rng(search_seed: int, index: int, key: str, attempt: int) -> random.Random:
  """The stream of one key of one member: independent of the other keys and members (and Python's version)."""
  digest = hashlib.sha256(f"{search_seed}/{index}/{key}/{attempt}".encode("utf-8")).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


def sample(n: int, /, *, search_seed: int = 0, **spaces: Distribution | Sequence[Any]) -> list[dict[str, Any]]:
  """`n` drawn members, each crossed with the product of any list-valued keys (grid axes).

  Member i's values are a function of (search_seed, i, key) alone: raising `n` with the same seed keeps
  the first members (an extended search trains only the new ones), and another `search_seed` draws
  others. A draw that equals an earlier one is drawn again, so the n draws are distinct. Keys keep the
  given order; the draws vary slowest: sample(2, lr=loguniform(1e-4, 1e-2), beta=[1, 4]) is 4 members.
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise SweepError(f"sample() needs a count of members of at least 1, got {n!r}")
  if isinstance(search_seed, bool) or not isinstance(search_seed, int):
    raise SweepError(f"search_seed={search_seed!r} must be an int")
  drawn = {key: space for key, space in spaces.items() if isinstance(space, Distribution)}
  grid = {key: space for key, space in spaces.items() if key not in drawn}
  if not drawn:
    raise SweepError("sample() has no distribution to draw (uniform, loguniform, randint, choice); for a grid of "
                     "listed values use product()")
  for key, options in grid.items():
    check_options(key, options)
  sizes = [d.size() for d in drawn.values()]
  size = math.prod(sizes) if None not in sizes else None
  if size is not None and n > size:
    raise SweepError(f"{n} members asked of a space of {size} distinct values "
                     f"({', '.join(f'{k}={d}' for k, d in drawn.items())}); ask for at most {size}, or list the "
                     "values as a grid")
  attempts = _MAX_ATTEMPTS if size is None else min(10_000, _MAX_ATTEMPTS + 20 * size)
  draws: list[dict[str, Any]] = []
  seen: set[Any] = set()
  for i in range(n):
    for attempt in range(attempts):
      values = {key: d.draw(_rng(search_seed, i, key, attempt)) for key, d in drawn.items()}
      point = tuple(canonical(v) for v in values.values())
      if point not in seen:
        break
    else:
      raise SweepError(f"sample() drew member {i} like an earlier one {attempts} times: at {DIGITS} significant "
                       f"digits {', '.join(f'{k}={d}' for k, d in drawn.items())} holds too few values for {n} "
                       "members; widen the ranges or ask for fewer members")
    seen.add(point)
    draws.append(values)
  combos = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
  return [{key: {**combo, **values}[key] for key in spaces} for values in draws for combo in combos]
