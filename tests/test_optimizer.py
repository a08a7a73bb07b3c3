"""The optimizer's protocol options: schedules, Adam's numbers, clipping and weight decay, all from `hp`.

Each schedule is checked against optax's own constructor on plain numbers, while ours runs jitted with
its numbers traced; changing a number must not retrace.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ae_jax import config as config_lib
from ae_jax import hparams
from ae_jax import step as step_lib
from tests.conftest import family_config

STEPS = (0, 1, 5, 9, 10, 11, 40, 99, 100, 250)


def _config(**overrides):
  config = family_config("undercomplete")
  config.update(overrides)
  config_lib.validate(config)
  return config


def _hp(config):
  return {k: np.asarray(v, np.int32 if k in hparams.INT_KEYS else np.float32)
          for k, v in hparams.from_config(config).items()}


def _traced_schedule(config, steps_per_epoch=None):
  """(hp, count) -> lr, jitted (hp traced), and a list that grows by one per trace."""
  traces = []

  @jax.jit
  def lr(hp, count):
    traces.append(1)
    out = step_lib.learning_rate_schedule(config.lr_schedule, hp, total_steps=config.num_steps,
                                          boundaries=tuple(config.boundaries), steps_per_epoch=steps_per_epoch)
    return out(count) if callable(out) else jnp.asarray(out)

  return lr, traces


@pytest.mark.parametrize("overrides,reference", [
    ({"lr_schedule": "constant", "learning_rate": 3e-3}, lambda: optax.constant_schedule(3e-3)),
    ({"lr_schedule": "warmup_cosine", "learning_rate": 2e-3, "warmup_steps": 10.0, "final_lr_fraction": 0.1,
      "num_steps": 100}, lambda: optax.warmup_cosine_decay_schedule(0.0, 2e-3, 10, 100, 2e-4)),
    ({"lr_schedule": "warmup_cosine", "learning_rate": 2e-3, "warmup_steps": 0.0, "num_steps": 100},
     lambda: optax.cosine_decay_schedule(2e-3, 100)),
    ({"lr_schedule": "exponential", "learning_rate": 1e-2, "decay_rate": 0.5, "decay_steps": 20.0},
     lambda: optax.exponential_decay(1e-2, 20, 0.5)),
    ({"lr_schedule": "piecewise", "learning_rate": 1e-2, "boundaries": (10, 40), "scales": (0.5, 0.1)},
     lambda: optax.piecewise_constant_schedule(1e-2, {10: 0.5, 40: 0.1})),
])
def test_schedules_match_optax_at_given_steps(overrides, reference):
  config = _config(**overrides)
  lr, _ = _traced_schedule(config)
  ref = reference()
  for t in STEPS:
    np.testing.assert_allclose(lr(_hp(config), t), ref(t), rtol=1e-5, atol=1e-12, err_msg=f"step {t}")


def test_iwae_schedule_known_values():
  # 10 steps per epoch: stage i (lr * 10^(-i/7)) starts after (3^i - 1) / 2 epochs, i.e. at epochs
  # 0, 1, 4, 13, 40, 121, 364, 1093; from epoch 3280 on, stage 7 (a tenth) holds.
  config = _config(lr_schedule="iwae", learning_rate=1e-3)
  lr, _ = _traced_schedule(config, steps_per_epoch=10)
  expected = {0: 0, 9: 0, 10: 1, 39: 1, 40: 2, 129: 2, 130: 3, 400: 4, 1210: 5, 3640: 6, 10929: 6, 10930: 7,
              32800: 7, 100_000: 7}
  for t, i in expected.items():
    np.testing.assert_allclose(lr(_hp(config), t), 1e-3 * 10 ** (-i / 7), rtol=1e-5, err_msg=f"step {t}")
  assert step_lib.iwae_boundaries(10)[-1] == 10930 and sum(3**i for i in range(7)) == 1093


@pytest.mark.parametrize("overrides,key,values", [
    ({"lr_schedule": "warmup_cosine", "warmup_steps": 10.0, "num_steps": 100}, "warmup_steps", (5.0, 20.0)),
    ({"lr_schedule": "exponential"}, "decay_rate", (0.5, 0.9)),
    ({"lr_schedule": "piecewise", "boundaries": (10,), "scales": (0.5,)}, "scales/0", (0.1, 0.3)),
])
def test_changing_a_schedule_number_does_not_recompile(overrides, key, values):
  config = _config(**overrides)
  lr, traces = _traced_schedule(config)
  hp = _hp(config)
  outs = [float(lr({**hp, key: np.float32(v)}, 12)) for v in values]
  assert len(traces) == 1, "a new number retraced the schedule"
  assert outs[0] != outs[1]  # The number is read, not a constant baked in.


def _update(config, hp, grads, params):
  make = step_lib.make_optimizer(config, steps_per_epoch=10)
  state = make(hp).init(params)
  return make(hp).update(grads, state, params)


@pytest.mark.parametrize("kind", step_lib.OPTIMIZERS)
def test_state_structure_does_not_depend_on_the_numbers(kind):
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  for schedule, extra in (("constant", {}), ("piecewise", {"boundaries": (4,), "scales": (0.1,)}),
                          ("iwae", {})):
    config = _config(optimizer=kind, lr_schedule=schedule, **extra)
    make = step_lib.make_optimizer(config, steps_per_epoch=10)
    a = make(_hp(config)).init(params)
    b = make(_hp(_config(optimizer=kind, lr_schedule=schedule, learning_rate=0.5, b1=0.5, b2=0.9, eps=1e-3,
                         grad_clip=1.0, weight_decay=0.3, **extra))).init(params)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    # The constant schedule keeps the state it always had (checkpoints from before the options restore).
    if schedule == "constant":
      plain = {"adam": optax.adam(1e-3), "adamw": optax.adamw(1e-3), "sgd": optax.sgd(1e-3, momentum=0.9)}[kind]
      assert jax.tree.structure(a) == jax.tree.structure(plain.init(params))


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_numbers_come_from_hp(kind):
  config = _config(optimizer=kind, learning_rate=0.1, b1=0.5, b2=0.6, eps=1e-2, weight_decay=0.3)
  params = {"w": jnp.arange(4.0)}
  grads = {"w": jnp.asarray([0.1, -2.0, 0.0, 3.0])}
  ours, _ = jax.jit(lambda hp: _update(config, hp, grads, params))(_hp(config))
  if kind == "adam":
    ref = optax.adam(0.1, b1=0.5, b2=0.6, eps=1e-2)
  else:
    ref = optax.adamw(0.1, b1=0.5, b2=0.6, eps=1e-2, weight_decay=0.3)
  expected, _ = ref.update(grads, ref.init(params), params)
  np.testing.assert_allclose(ours["w"], expected["w"], rtol=1e-6)
  default, _ = _update(_config(optimizer=kind, learning_rate=0.1), _hp(_config(optimizer=kind, learning_rate=0.1)),
                       grads, params)
  assert not np.allclose(ours["w"], default["w"])


def test_gradient_clipping_by_global_norm_and_zero_is_off():
  params = {"a": jnp.zeros(2), "b": jnp.zeros(1)}
  grads = {"a": jnp.asarray([3.0, 0.0]), "b": jnp.asarray([4.0])}  # Global norm 5.
  def update_norm(clip):
    config = _config(optimizer="sgd", learning_rate=1.0, grad_clip=clip)  # First SGD step: update = -grads.
    updates, _ = jax.jit(lambda hp: _update(config, hp, grads, params))(_hp(config))
    return float(optax.tree.norm(updates))
  assert update_norm(1.0) == pytest.approx(1.0, rel=1e-6)
  assert update_norm(0.0) == pytest.approx(5.0, rel=1e-6)  # Off.
  assert update_norm(10.0) == pytest.approx(5.0, rel=1e-6)  # Below the threshold: untouched.


@pytest.mark.parametrize("overrides,fragment", [
    ({"lr_schedule": "linear"}, "--config.lr_schedule='linear' is not one of"),
    ({"b1": 1.0}, "--config.b1=1.0 must be in [0, 1)"),
    ({"b2": -0.1}, "--config.b2=-0.1 must be in [0, 1)"),
    ({"eps": 0.0}, "--config.eps=0.0 must be a positive float"),
    ({"grad_clip": -1.0}, "--config.grad_clip=-1.0 must be >= 0 (0 = no clipping)"),
    ({"weight_decay": -1e-4}, "--config.weight_decay=-0.0001 must be >= 0"),
    ({"lr_schedule": "warmup_cosine", "final_lr_fraction": 1.5}, "--config.final_lr_fraction=1.5 must be in"),
    ({"lr_schedule": "exponential", "decay_rate": 0.0}, "--config.decay_rate=0.0 must be positive"),
    ({"lr_schedule": "exponential", "decay_steps": 0.0}, "--config.decay_steps=0.0 must be positive"),
    ({"boundaries": (40, 10)}, "--config.boundaries=(40, 10) must be increasing positive step numbers"),
    ({"scales": (-0.1,)}, "--config.scales=(-0.1,) must be non-negative numbers"),
    ({"lr_schedule": "piecewise", "boundaries": (10, 20), "scales": (0.1,)}, "needs one scale per boundary"),
    ({"lr_schedule": "piecewise"}, "needs one scale per boundary"),
    ({"num_epochs": -1}, "--config.num_epochs=-1 must be >= 0 (0 = train num_steps)"),
    ({"warmup_steps": float("nan")}, "--config.warmup_steps=nan must be a finite number"),
])
def test_bad_optimizer_options_fail_in_one_line(overrides, fragment):
  config = family_config("undercomplete")
  config.update(overrides)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config)
  assert fragment in str(e.value) and "\n" not in str(e.value)


def test_resolve_steps_from_epochs():
  config = _config(num_steps=7, batch_size=32)
  assert config_lib.resolve_steps(config, 1000) == 7
  config.num_epochs = 3
  assert config_lib.steps_per_epoch(config, 1000) == 31  # Full batches only.
  assert config_lib.resolve_steps(config, 1000) == 93
  resolved = config_lib.resolved(config, 1000)
  assert resolved.num_steps == 93 and resolved.num_epochs == 3 and config.num_steps == 7


def test_piecewise_scales_are_hyperparameters_and_boundaries_structure():
  a = _config(lr_schedule="piecewise", boundaries=(10, 40), scales=(0.5, 0.1))
  b = _config(lr_schedule="piecewise", boundaries=(10, 40), scales=(0.2, 0.3), eps=1e-4, warmup_steps=5.0)
  assert hparams.structure_key(a) == hparams.structure_key(b)  # One program for both.
  assert hparams.from_config(b)["scales/1"] == pytest.approx(0.3) and "scales/0" not in hparams.from_config(
      _config())
  c = _config(lr_schedule="piecewise", boundaries=(10, 50), scales=(0.5, 0.1))
  assert hparams.structure_key(a) != hparams.structure_key(c)
  stacked = hparams.stack([hparams.from_config(a), hparams.from_config(b)])
  np.testing.assert_allclose(stacked["scales/0"], [0.5, 0.2])


def test_l2_norm_is_the_global_norm():
  tree = {"w": jnp.array([[3.0, 0.0], [0.0, 0.0]]), "b": jnp.array([4.0]), "s": jnp.array(12.0)}
  assert float(jax.jit(step_lib.l2_norm)(tree)) == 13.0  # sqrt(9 + 16 + 144)
  tree = jax.tree.map(lambda x: x * 1.5, tree)
  np.testing.assert_allclose(step_lib.l2_norm(tree), optax.tree.norm(tree), rtol=1e-6)
