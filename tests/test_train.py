"""The data-parallel step: device-count invariance, determinism, and loud failure on non-finite loss."""

import jax
import numpy as np
import pytest

from ae_jax import data
from ae_jax import feeds
from ae_jax import hparams
from ae_jax import models
from ae_jax import program as program_lib
from tests.conftest import family_config

NUM_EXAMPLES = 64


def _run(family, devices, *, chunks=(3, 3), placement="device", members=None, **overrides):
  """Trains `sum(chunks)` steps of `family` on random images with `devices`; returns (state, metrics).

  `members` lists hyperparameter overrides, one member each (default: one member, the config's own).
  The program is `program.build`'s, as training's.
  """
  config = family_config(family)
  config.update({"batch_size": 16, "learning_rate": 1e-2, **overrides})
  images = np.asarray(jax.random.uniform(jax.random.key(1), (NUM_EXAMPLES, 8, 8, 1)))
  labels = np.zeros(NUM_EXAMPLES, np.int32)
  ds = data.Dataset(images, labels, images, labels, "random")
  hp_list = [hparams.from_config({**config.to_dict(), **m}) for m in (members or [{}])]
  program = program_lib.build(config, ds, hp_list, devices=devices, placement=placement)
  state, metrics, done = program.init_state(), [], 0
  for i, length in enumerate(chunks):
    state, m = program.feed.run(state, program.hp, done, length, chunks[i + 1] if i + 1 < len(chunks) else 0)
    metrics.append(m)
    done += length
  program.feed.close()
  return state, jax.tree.map(lambda *m: np.concatenate(m), *metrics)


@pytest.mark.parametrize("family,overrides", [
    ("undercomplete", {}),
    ("sparse", {}),  # KL sparsity: the batch-mean activation is pmean-ed over devices.
    # TopK: the counters of examples since each unit fired (dead after 2 batches) see the global batch.
    ("sparse", {"sparsity": "topk", "code_activation": "linear", "topk": 2, "auxk": 4, "dead_after": 32}),
    ("denoising", {"binarize": "dynamic"}),  # Per-example keys: the same noise on any device count.
    ("vae", {}),
    ("contractive", {"contractive_path": "stochastic"}),  # Per-example random probes.
])
def test_one_and_four_devices_give_the_same_parameters(family, overrides):
  if len(jax.devices()) < 4 and jax.default_backend() != "cpu":  # benchmarks/gpu_check.sh on one GPU.
    pytest.skip(f"{len(jax.devices())} {jax.default_backend()} device(s): needs 4")
  assert len(jax.devices()) >= 4, "conftest should have set 4 fake CPU devices"
  # SGD: Adam divides by sqrt(v), which turns float-rounding differences in near-zero gradients
  # (the all-reduce sums in another order) into differences of a whole learning rate.
  overrides = {"optimizer": "sgd", "learning_rate": 1e-3, **overrides}
  one, m1 = _run(family, jax.devices()[:1], **overrides)
  four, m4 = _run(family, jax.devices()[:4], **overrides)
  assert int(one.step[0]) == int(four.step[0]) == 6
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(one.model_state), jax.tree.leaves(four.model_state)):
    np.testing.assert_array_equal(a, b)


def test_the_data_parallel_step_applies_the_mean_gradient_of_the_whole_batch():
  # SGD's first step (momentum's trace starts at 0) is params - lr * g. With the batch split over 4 devices,
  # g must be the gradient of the mean loss over the whole batch, computed here outside the mesh by hand:
  # a device's own quarter, or the sum of the 4 devices' gradients, gives other parameters. (Dropping the
  # all-reduce outright fails shard_map's type check when the step is traced; with the check off it traces,
  # and this sees one device's gradient: tests/mutants.py has both.)
  config = family_config("undercomplete")
  config.update({"batch_size": 16, "optimizer": "sgd", "learning_rate": 0.5})
  images = np.asarray(jax.random.uniform(jax.random.key(1), (NUM_EXAMPLES, 8, 8, 1)))
  labels = np.zeros(NUM_EXAMPLES, np.int32)
  hp = hparams.from_config(config)
  program = program_lib.build(config, data.Dataset(images, labels, images, labels, "random"), [hp],
                              devices=jax.devices()[:4])
  assert program.mesh.shape["data"] == 4
  state = program.init_state()
  params = jax.tree.map(lambda a: np.asarray(a)[0], state.params)
  x = images[:16]
  new, metrics = jax.jit(program.step)(state, {"image": x[None], "label": labels[None, :16]}, program.hp, 0)
  keys = jax.random.split(jax.random.key(0), 16)  # The undercomplete loss draws nothing.
  whole = lambda p, xb: program.loss(p, {"image": xb, "label": labels[:len(xb)]}, keys[:len(xb)], hp, {})[0]
  grads = jax.grad(whole)(params, x)
  expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
  for got, want in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(got)[0], want, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"][0], whole(params, x), rtol=1e-5)
  quarter = jax.grad(whole)(params, x[:4])  # What one device's shard alone would give: told apart here.
  assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(quarter))) > 1e-3


def test_streamed_members_of_different_seeds_read_their_own_batches():
  # Two members, two data orders: streamed from the host (on a 2 x 2 mesh) they train on the batches the
  # device feed gives each; a member reading the other's batches would match the other's seed instead.
  members = [{"seed": 0}, {"seed": 1}]
  device, _ = _run("denoising", jax.devices()[:4], chunks=(3, 3, 2), members=members)
  host, _ = _run("denoising", jax.devices()[:4], chunks=(3, 3, 2), members=members, placement="stream")
  for x, y in zip(jax.tree.leaves(device.params), jax.tree.leaves(host.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_chunking_does_not_change_the_result():
  # Data order and noise are pure functions of (key, step): 6 steps as 6x1 equal 2x3 equal 1x6.
  a, _ = _run("denoising", jax.devices()[:1], chunks=(6,))
  b, _ = _run("denoising", jax.devices()[:1], chunks=(1,) * 6)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loop", ["scan", "step"])
def test_metrics_include_norms_and_the_loss_decreases(loop):
  _, metrics = _run("undercomplete", jax.devices()[:1], chunks=(20,), loop=loop)
  for name in ("loss", "loss_rec", "grad_norm"):
    assert metrics[name].shape == (20, 1) and np.all(np.isfinite(metrics[name]))
  for name in ("param_norm", "update_norm"):  # Computed at the logged (last) step only.
    assert metrics[name].shape == (1, 1) and np.all(metrics[name] > 0)
  assert metrics["loss"][-5:].mean() < metrics["loss"][:5].mean()


@pytest.mark.parametrize("placement", ["device", "stream"])
def test_the_logged_norms_are_those_of_the_last_step(placement):
  # Six steps as one chunk log the norms that the sixth step alone computes (chunks of one).
  _, whole = _run("vae", jax.devices()[:1], chunks=(6,), placement=placement)
  _, ones = _run("vae", jax.devices()[:1], chunks=(1,) * 6, placement=placement)
  for name in ("param_norm", "update_norm"):
    assert whole[name].shape == (1, 1)
    np.testing.assert_allclose(whole[name][0], ones[name][-1], rtol=1e-6)
  np.testing.assert_allclose(whole["grad_norm"], ones["grad_norm"], rtol=1e-6)


@pytest.mark.parametrize("devices,members", [(1, None), (4, None), (1, [{"seed": 0}, {"seed": 1, "noise_level": 0.4}]),
                                             (4, [{"seed": 0}, {"seed": 1}, {"seed": 2}, {"seed": 3}])])
def test_scan_and_step_loops_train_bitwise_alike(devices, members):
  # config.loop: one lax.scan per chunk or one jitted call per step, the same per-step function. Chunks
  # of 3, 3, 2 at 4 steps per epoch cross epoch boundaries inside a chunk and at its start.
  kw = {"chunks": (3, 3, 2), "members": members, "binarize": "dynamic"}
  scan, m_scan = _run("denoising", jax.devices()[:devices], loop="scan", **kw)
  step, m_step = _run("denoising", jax.devices()[:devices], loop="step", **kw)
  for a, b in zip(jax.tree.leaves(scan), jax.tree.leaves(step)):
    np.testing.assert_array_equal(a, b)
  for name in m_scan:
    np.testing.assert_array_equal(m_scan[name], m_step[name])


def test_auto_loop_scans_as_measured_and_counts_every_members_examples(monkeypatch):
  assert [feeds.resolve_loop("auto", b, 128) for b in ("cpu", "gpu", "tpu")] == ["scan"] * 3
  monkeypatch.setattr(feeds, "CPU_STEP_MAX_EXAMPLES", 256)  # A CPU where the step loop measured faster.
  assert [feeds.resolve_loop("auto", "cpu", b) for b in (256, 257, 1024)] == ["step", "scan", "scan"]
  assert feeds.resolve_loop("auto", "gpu", 128) == "scan"
  config = family_config("vae")
  config.batch_size = 16
  images = np.zeros((64, 8, 8, 1), np.float32)
  ds = data.Dataset(images, np.zeros(64, np.int32), images, np.zeros(64, np.int32), "zeros")
  members = [hparams.from_config({**config.to_dict(), "seed": s}) for s in range(32)]  # 32 x 16 = 512.
  assert program_lib.build(config, ds, members[:1], devices=jax.devices()[:1]).feed.loop == "step"
  assert program_lib.build(config, ds, members, devices=jax.devices()[:1]).feed.loop == "scan"
  assert [feeds.resolve_loop(loop, "cpu", 1024) for loop in ("scan", "step")] == ["scan", "step"]
  with pytest.raises(ValueError, match="unknown loop 'fast'"):
    feeds.resolve_loop("fast")


def test_streaming_from_the_host_trains_on_the_same_batches_as_the_device_feed():
  # 64 examples / batch 16 = 4 steps per epoch: chunks of 3, 3 and 2 cross two epoch boundaries.
  device, _ = _run("denoising", jax.devices()[:4], chunks=(3, 3, 2))
  host, _ = _run("denoising", jax.devices()[:4], chunks=(3, 3, 2), placement="stream")
  for x, y in zip(jax.tree.leaves(device.params), jax.tree.leaves(host.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def _member_params(state, i):
  return jax.tree.leaves(jax.tree.map(lambda x: x[i], state.params))


@pytest.mark.parametrize("vectorize", ["vmap", "loop"])
@pytest.mark.parametrize("devices", [1, 4])
def test_members_of_one_program_equal_their_single_runs(vectorize, devices):
  # Two seeds x two noise levels: each member's init, data order and noise come from its own seed.
  members = [{"seed": s, "noise_level": n} for s in (0, 1) for n in (0.1, 0.4)]
  swept, _ = _run("denoising", jax.devices()[:devices], members=members, member_vectorize=vectorize,
                  optimizer="sgd", learning_rate=1e-3)
  for i, member in enumerate(members):
    alone, _ = _run("denoising", jax.devices()[:1], optimizer="sgd", learning_rate=1e-3, **member)
    for a, b in zip(_member_params(swept, i), _member_params(alone, 0)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_diverging_member_is_frozen_and_the_others_go_on():
  members = [{"learning_rate": 1e-2}, {"learning_rate": 1e30}]  # The second overflows within a few steps.
  state, metrics = _run("undercomplete", jax.devices()[:1], members=members, chunks=(6,))
  diverged_at = np.asarray(state.diverged_at)
  assert diverged_at[0] == 0 and 1 <= diverged_at[1] <= 6
  assert not np.isfinite(metrics["loss"][diverged_at[1] - 1, 1])  # The step it names was the bad one.
  assert np.all(np.isfinite(metrics["loss"][:, 0])) and int(state.step[0]) == 6
  assert int(state.step[1]) == diverged_at[1] - 1  # Frozen at its last good state...
  assert all(np.all(np.isfinite(p)) for p in _member_params(state, 1))  # ...which is finite.


def test_a_piecewise_schedule_is_applied_per_step():
  # Boundary 2 with scale 0: the first two steps move the parameters, the next three do not.
  _, metrics = _run("undercomplete", jax.devices()[:1], chunks=(1,) * 5, optimizer="sgd", lr_schedule="piecewise",
                    boundaries=(2,), scales=(0.0,))
  norms = metrics["update_norm"][:, 0]
  assert np.all(norms[:2] > 0) and np.all(norms[2:] == 0), norms


def test_training_length_in_epochs_and_the_data_mean_output_bias(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  from ae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from ae_jax import train  # pylint: disable=g-import-not-at-top
  from ae_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  config = family_config("undercomplete")
  # A negligible learning rate: the trained output bias is still the one set at init. The IWAE schedule
  # counts epochs, so it needs the steps per epoch that train.py passes.
  config.update({"num_epochs": 2, "num_steps": 7, "init_output_bias": "data_mean", "learning_rate": 1e-12,
                 "lr_schedule": "iwae", "num_pictures": 0})
  ds = data.load("digits")
  expected = 2 * (len(ds.train_images) // config.batch_size)
  assert config_lib.resolve_steps(config, len(ds.train_images)) == expected != config.num_steps
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result.step == expected and result.history[-1]["step"] == expected
  with open(os.path.join(tmp_path, workdir_lib.STATUS), encoding="utf-8") as f:
    assert json.load(f)["num_epochs"] == 2
  np.testing.assert_allclose(result.params["decoder"]["logits"]["bias"],
                             models.data_mean_logits(ds.train_images).reshape(-1), atol=1e-6)


def test_a_conv_model_on_cpu_gets_one_line_on_what_to_expect():
  from ae_jax import train  # pylint: disable=g-import-not-at-top

  config = family_config("undercomplete")
  assert train.conv_cpu_warning(config) is None  # MLP.
  config.update({"architecture": "conv", "widths": (32, 64)})
  line = train.conv_cpu_warning(config)
  if jax.default_backend() == "cpu":
    assert "ms per step" in line and "(32, 64)" in line and "\n" not in line
  else:
    assert line is None


def test_auxk_brings_back_units_dead_for_the_window():
  # TopK 2 of 16 on the digits at a high learning rate: most units stop firing within ~20 steps. Two
  # members of one program, AuxK off and on: with AuxK the units silent for dead_after=320 examples
  # (10 batches) are asked to model the residual, and several come back; without it fewer do.

  ds = data.load("digits")
  config = family_config("sparse")
  config.update({"sparsity": "topk", "code_activation": "linear", "latent_dim": 16, "topk": 2, "auxk": 8,
                 "dead_after": 320, "batch_size": 32, "learning_rate": 1e-2})
  hp_list = [hparams.from_config({**config.to_dict(), "auxk_weight": w}) for w in (0.0, 1.0)]
  program = program_lib.build(config, ds, hp_list, devices=jax.devices()[:1], placement="device")
  model = program.model
  state, metrics = program.feed.run(program.init_state(), program.hp, 0, 400)
  program.feed.close()
  window = np.asarray(metrics["dead_fraction_window"]) * 16  # (steps, members): dead units.
  assert np.all(window[:9] == 0) and window[9:].max() >= 10  # Nobody is dead before 320 examples; then most.
  since = np.asarray(state.model_state["examples_since_fired"])
  np.testing.assert_array_equal((since >= 320).sum(axis=1), window[-1])  # The metric reads the counters.
  without, with_auxk = window[-1]
  assert with_auxk <= window[:, 1].max() - 3 and with_auxk < without
  fired = [np.asarray(model.apply({"params": jax.tree.map(lambda x, i=i: x[i], state.params)}, ds.test_images,
                                  method="encode") > 0).any(axis=0).sum() for i in (0, 1)]
  assert fired[1] > fired[0]  # On the test split too, more units fire for some digit.
