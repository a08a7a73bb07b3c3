"""A config is structure (static: shapes and code) plus hyperparameters (data: numbers in the math).

The loss and the optimizer take the hyperparameters as an explicit pytree `hp`, a dict of scalars;
a sweep stacks the `hp` of its members along a leading member axis, so one compiled program trains
all of them (`vmap` or a loop over that axis, sharded over devices). A single run is a sweep of one.

Changing a hyperparameter never recompiles; changing a structure key does, which is why a sweep
groups its members by `structure_key` and runs one program per group.

This module is pure data at the bottom of the package: it imports nothing from `ae_jax`.
"""

from collections.abc import Mapping, Sequence
import json
import math
from typing import Any

import numpy as np

# Numbers inside the math, read from `hp` (never closed over) by the families and the optimizer.
FLOAT_KEYS = ("learning_rate", "sparsity_weight", "rho", "auxk_weight", "noise_level", "contractive_weight",
              "beta", "b1", "b2", "eps", "grad_clip", "weight_decay", "warmup_steps", "final_lr_fraction",
              "decay_rate", "decay_steps", "kl_target", "reconstruction_target", "l0_target", "jacobian_target",
              "setpoint_rate")
# Set-point targets (`ae_jax.setpoint`; 0 = off): whether one is set is structure, its value data.
SETPOINT_TARGETS = ("kl_target", "reconstruction_target", "l0_target", "jacobian_target")
# The seed: initialisation, data order and noise of a member all derive from it.
INT_KEYS = ("seed",)
KEYS = FLOAT_KEYS + INT_KEYS
EXTRA_PREFIX = "weight/"  # hp["weight/<term>"]: the weight of an extra user term.
# hp["scales/<i>"]: the piecewise learning-rate schedule's factor from boundaries[i] on (its number of
# factors, len(boundaries), is structure; the factors are data).
SCALE_PREFIX = "scales/"
VECTOR_KEYS = ("scales",)  # Config tuples whose entries are hyperparameters, one hp key per entry.

HParams = dict[str, Any]


def parse_extra_terms(spec: str) -> list[tuple[str, str, float]]:
  """'mod:fn=0.1,mod2:fn2' -> [('fn', 'mod:fn', 0.1), ('fn2', 'mod2:fn2', 1.0)]: (name, path, weight).

  Only the syntax is checked here; importing the functions is the families' job.
  """
  terms = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    path, _, weight = item.partition("=")
    path = path.strip()
    try:
      value = float(weight) if weight.strip() else 1.0
    except ValueError:
      raise ValueError(f"extra term {item!r}: weight {weight!r} is not a number") from None
    if not math.isfinite(value):
      raise ValueError(f"extra term {item!r}: weight {weight.strip()!r} must be a finite number, e.g. 0.1")
    terms.append((path.rpartition(":")[2], path, value))
  return terms


def with_weight(spec: str, name: str, weight: float) -> str:
  """`spec` with the term `name` weighted by `weight` (a sweep's `weight/<name>=...`); KeyError if no term has
  that name. The other terms keep their weights."""
  terms = parse_extra_terms(spec)
  if name not in [n for n, _, _ in terms]:
    raise KeyError(name)
  return ",".join(f"{path}={(float(weight) if n == name else w)!r}" for n, path, w in terms)


def extra_terms_structure(spec: str) -> str:
  """The extra terms without their weights: which functions run (structure), not how much they count."""
  return ",".join(path for _, path, _ in parse_extra_terms(spec))


def from_config(config: Mapping[str, Any]) -> HParams:
  """The hyperparameters of one run as Python numbers: `KEYS`, one weight per extra term, and the
  piecewise schedule's scales (only under that schedule)."""
  hp = {k: float(config[k]) for k in FLOAT_KEYS}
  hp["seed"] = int(config["seed"])
  if config["lr_schedule"] == "piecewise":
    for i, scale in enumerate(config["scales"]):
      hp[f"{SCALE_PREFIX}{i}"] = float(scale)
  for name, _, weight in parse_extra_terms(config["extra_terms"]):
    hp[EXTRA_PREFIX + name] = weight
  return hp


def stack(hps: Sequence[HParams]) -> dict[str, np.ndarray]:
  """Members' hyperparameters with a leading member axis: float32 numbers, int32 seeds."""
  if not hps:
    raise ValueError("stack needs at least one member")
  keys = list(hps[0])
  if any(list(hp) != keys for hp in hps):
    raise ValueError("members of one program must have the same hyperparameter keys (same extra terms)")
  return {k: np.asarray([hp[k] for hp in hps], np.int32 if k in INT_KEYS else np.float32) for k in keys}


def structure_key(config: Mapping[str, Any]) -> str:
  """A string equal for two configs exactly when they can train in one program: every key but the
  hyperparameters (and `overwrite`) is shared by the members of a program, step counts included."""
  values = json.loads(json.dumps(dict(config), default=str))  # Tuples become lists, as in stored configs.
  out = {k: v for k, v in values.items() if k not in KEYS + VECTOR_KEYS and k != "overwrite"}
  out["extra_terms"] = extra_terms_structure(config["extra_terms"])
  # A member with a set point carries a controller (state, logged terms): it trains apart from plain ones.
  out["setpoints"] = [k for k in SETPOINT_TARGETS if float(values.get(k) or 0) > 0]
  return json.dumps(out, sort_keys=True)
