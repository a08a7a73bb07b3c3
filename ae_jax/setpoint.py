"""Set-point members: ask for a measured quantity (a KL rate, an L0, a reconstruction error) and let the
program adapt the coefficient that moves it.

A target is a hyperparameter (`kl_target`, `reconstruction_target`, `l0_target`, `jacobian_target`;
0 = off, the plain coefficient applies); the coefficient it drives becomes the member's controlled
state. Each step the loss sees

    coefficient = hp[coefficient key] * exp(state["setpoint_log_scale"])

and the state moves by dual ascent in log space (a Lagrange multiplier kept positive by its
logarithm, as GECO's multiplicative update, Rezende & Viola 2018):

    log_scale += setpoint_rate * direction * clip((measured - target) / target, -1, 1)

where `measured` is the batch's quantity, averaged over the data-parallel axis (so 1 and 4 devices
agree), and `direction` is +1 when a larger coefficient lowers the quantity (beta lowers the KL, an
L1 weight lowers L0) and -1 when it raises it (a larger beta worsens the reconstruction: GECO's
constraint, written on beta = 1 / lambda). The relative error is clipped so one odd batch cannot
throw the coefficient; the coefficient is bounded to [COEFFICIENT_MIN, COEFFICIENT_MAX].

With `setpoint_rate = 0` the scale stays exp(0) = 1 and the member is exactly the plain member with
its initial coefficient. Whether a member has a controller at all is structure (`hparams.structure_key`
groups targeted members apart from plain ones), so plain runs carry no controller state.

This module reads no family: the registry (`ae_jax.families`) says which target a family supports,
which coefficient it drives and how the quantity is measured.
"""

from collections.abc import Callable
import dataclasses
import math
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from ae_jax import hparams

TARGETS = hparams.SETPOINT_TARGETS  # ("kl_target", "reconstruction_target", "l0_target", "jacobian_target")
RATE = "setpoint_rate"
STATE = "setpoint_log_scale"
COEFFICIENT_MIN, COEFFICIENT_MAX = 1e-6, 1e6  # The adapted coefficient never reaches 0 or infinity.
MET_TOLERANCE = 0.05  # A member's achieved value within 5% of its target counts as met.
# The logged quantities (train metrics, TensorBoard, metrics.jsonl): measured, target, coefficient.
MEASURED, TARGET, COEFFICIENT = "setpoint_measured", "setpoint_target", "setpoint_coefficient"


@dataclasses.dataclass(frozen=True)
class SetPoint:
  """How a family holds one quantity at a target."""

  target: str  # The hyperparameter holding the target, e.g. "kl_target".
  coefficient: str  # The hyperparameter the controller scales, e.g. "beta".
  # The batch's quantity from the objective's terms and codes: measure(terms, code, config) -> scalar.
  measure: Callable[[dict[str, jax.Array], jax.Array, Any], jax.Array]
  direction: float  # +1: a larger coefficient lowers the quantity; -1: it raises it.
  metric: str  # The evaluation metric the achieved value is read from (eval.json), e.g. "elbo_kl".
  what: str  # In words, for messages and tables, e.g. "KL (nats per example)".
  frontier: tuple[str, ...] = ()  # Evaluation metrics on the other side of the trade-off (frontier.png).


def active(config) -> tuple[str, ...]:
  """The target keys `config` sets (> 0), in TARGETS order: structure (one program per answer)."""
  return tuple(k for k in TARGETS if float(config.get(k, 0.0) or 0.0) > 0)


def init_state() -> dict[str, jax.Array]:
  """The controller's state at step 0: the scale exp(0) = 1 on the initial coefficient."""
  return {STATE: jnp.zeros((), jnp.float32)}


def controlled_hp(point: SetPoint, hp: dict[str, jax.Array], state: dict[str, Any]) -> dict[str, jax.Array]:
  """`hp` with the coefficient the loss uses: the initial one times the controller's scale."""
  return {**hp, point.coefficient: hp[point.coefficient] * jnp.exp(state[STATE])}


def update(point: SetPoint, hp: dict[str, jax.Array], state: dict[str, Any], measured: jax.Array, *,
           axis_name: str | None = None) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """One dual-ascent step of the controller: (new state, the logged terms).

  `measured` is this device's batch value; it is averaged over `axis_name` first, so every device
  (and every device count) moves the state the same way.
  """
  measured = lax.stop_gradient(measured)
  if axis_name is not None:
    measured = lax.pmean(measured, axis_name)
  target, rate, initial = hp[point.target], hp[RATE], hp[point.coefficient]
  error = jnp.clip((measured - target) / jnp.maximum(target, 1e-12), -1.0, 1.0)
  log_initial = jnp.log(jnp.maximum(initial, 1e-30))
  low, high = math.log(COEFFICIENT_MIN) - log_initial, math.log(COEFFICIENT_MAX) - log_initial
  log_scale = jnp.clip(state[STATE] + rate * point.direction * error, low, high)
  coefficient = initial * jnp.exp(state[STATE])  # The one this step's loss used.
  logged = {MEASURED: measured, TARGET: target, COEFFICIENT: coefficient}
  return {**state, STATE: log_scale.astype(jnp.float32)}, logged


def check(config, points: dict[str, SetPoint], family: str) -> None:
  """Raises ValueError (the caller makes it a ConfigError) for a target the family cannot hold, a
  negative target, two targets on one coefficient, or a coefficient of 0 to scale."""
  for key in TARGETS:
    if float(config.get(key, 0.0)) < 0:
      raise ValueError(f"--config.{key}={config[key]} must be >= 0 (0 = no target: the plain coefficient applies)")
  if config.get(RATE, 0.0) < 0:
    raise ValueError(f"--config.{RATE}={config[RATE]} must be >= 0 (0 = the coefficient stays at its initial value)")
  keys = active(config)
  wrong = [k for k in keys if k not in points]
  if wrong:
    supported = ", ".join(f"{k} ({p.what})" for k, p in points.items()) or "none"
    raise ValueError(f"--config.{wrong[0]}={config[wrong[0]]}: the {family} family has no such quantity (its "
                     f"targets: {supported}); set it to 0")
  coefficients = [points[k].coefficient for k in keys]
  if len(set(coefficients)) < len(coefficients):
    raise ValueError(f"--config.{keys[0]} and --config.{keys[1]} both adapt {coefficients[0]}: set one of them to 0")
  for key in keys:
    if not config[points[key].coefficient] > 0:
      raise ValueError(f"--config.{key} adapts --config.{points[key].coefficient}, which is "
                       f"{config[points[key].coefficient]}: give it a positive starting value, e.g. 1.0")


def achieved(point: SetPoint, target: float, value: float) -> str:
  """'met' or 'missed by +12%': a member's achieved value (eval.json) against its target."""
  if not (math.isfinite(value) and target > 0):
    return "not measured"
  error = value / target - 1.0
  return "met" if abs(error) <= MET_TOLERANCE else f"missed by {100 * error:+.0f}%"
