"""A trained run as an object: `ae_jax.load(workdir)` gives back its config, parameters and model.

    import ae_jax
    model = ae_jax.load("runs/vae/653e4d7a")            # a single run's workdir
    model = ae_jax.load("runs/vae_beta", "best")        # a sweep's selected member (--select)
    model = ae_jax.load("runs/vae_beta", beta=4, seed=0)   # a sweep member by its overrides
    z = model.encode(model.dataset.test_images)         # (N, latent_dim): posterior means for a VAE
    images = model.decode(z)                            # (N, H, W, C) in [0, 1]

The parameters are the newest readable checkpoint's, restored by `ae_jax.checkpoints` into the train
state a run of this config starts from; the model is `families.model_from_config`'s (both from
`program.initial_state`). Every method is
jitted once per model and runs over fixed-size batches (`ae_jax.batching`).
"""

import dataclasses
import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from ae_jax import batching
from ae_jax import checkpoints
from ae_jax import config as config_lib
from ae_jax import data
from ae_jax import errors
from ae_jax import evaluators
from ae_jax import families
from ae_jax import pictures
from ae_jax import program
from ae_jax import workdir as workdir_lib

BATCH_SIZE = 500  # Examples per call of a jitted method (the last batch is padded to it).
BEST = "best"  # load(workdir, "best"): the member the sweep's --select chose (sweep.json).


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model: `config` as the run recorded it, `params` from its newest checkpoint (at `step`),
  and the data set it trained on (`dataset.test_images` to try it on)."""

  config: ml_collections.ConfigDict
  params: Any
  model: Any  # The flax module.
  dataset: data.Dataset
  workdir: str
  step: int

  @property
  def variational(self) -> bool:
    return families.get(self.config.family).variational

  @property
  def _apply(self) -> evaluators.Apply:
    return evaluators.Apply(self.model, self.params, variational=self.variational)

  def encode(self, x: Any) -> np.ndarray:
    """The codes of images x, (N, latent_dim) (the posterior mean for a VAE); one image gives one code."""
    x, single = self._images(x)
    z = batching.map_batches(self._apply.code, (x,), batch_size=BATCH_SIZE, label="encode")
    return z[0] if single else z

  def decode(self, z: Any) -> np.ndarray:
    """Images in [0, 1] (the decoder's mean, sigmoid of its logits) of codes z, (N, latent_dim) or one."""
    z = np.asarray(z, np.float32)
    single = z.ndim == 1
    z = z[None] if single else z
    if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
      raise errors.ConfigError(f"codes have shape {z.shape}; this model decodes (N, {self.config.latent_dim})")
    apply = self._apply
    images = batching.map_batches(lambda c: jax.nn.sigmoid(apply.decode_logits(c)), (z,), batch_size=BATCH_SIZE,
                                  label="decode")
    return images[0] if single else images

  def reconstruct(self, x: Any) -> np.ndarray:
    """decode(encode(x)): images in [0, 1] shaped as x."""
    x, single = self._images(x)
    out = batching.map_batches(self._apply.reconstruct, (x,), batch_size=BATCH_SIZE, label="reconstruct")
    return out[0] if single else out

  def sample(self, n: int, seed: int = 0) -> np.ndarray:
    """n images decoded from codes drawn from the prior N(0, I) (variational families only)."""
    if not self.variational:
      raise errors.ConfigError(f"sample() draws codes from a prior, which the {self.config.family} family has "
                               "not; decode(z) codes of your own instead, e.g. encode(x) moved a little")
    z = jax.random.normal(jax.random.key(seed), (n, self.config.latent_dim), np.float32)
    return self.decode(np.asarray(z))

  def interpolate(self, x0: Any, x1: Any, steps: int = 8) -> np.ndarray:
    """Images decoded at `steps` evenly spaced codes from encode(x0) to encode(x1), both included:
    (steps, H, W, C) for two images, (N, steps, H, W, C) for two batches of N."""
    z0, z1 = self.encode(x0), self.encode(x1)
    if z0.shape != z1.shape:
      raise errors.ConfigError(f"x0 and x1 give codes of shapes {z0.shape} and {z1.shape}; pass as many of each")
    lines = np.stack([pictures.interpolate(a, b, steps) for a, b in zip(np.atleast_2d(z0), np.atleast_2d(z1))])
    images = self.decode(lines.reshape(-1, lines.shape[-1]).astype(np.float32))
    images = images.reshape(len(lines), steps, *images.shape[1:])
    return images[0] if z0.ndim == 1 else images

  def _images(self, x: Any) -> tuple[np.ndarray, bool]:
    """x as a float32 batch of the data set's image shape, and whether it was one image."""
    x = np.asarray(x, np.float32)
    shape = self.dataset.example_shape
    if x.shape == shape:
      return x[None], True
    if x.shape[1:] != shape and x.ndim >= 1 and math.prod(x.shape[1:]) == math.prod(shape):
      x = x.reshape(len(x), *shape)  # Flattened images of the right size.
    if x.shape[1:] != shape:
      raise errors.ConfigError(f"images of shape {x.shape}; this model takes (N, {', '.join(map(str, shape))}) "
                               f"like the {self.dataset.name} images")
    return x, False


def load(workdir: str, member: str | None = None, **overrides) -> Trained:
  """The trained model in `workdir`: a single run's, or a sweep member's (`member`: its folder name or
  "best", the one the sweep's --select chose; or the member's `overrides`, e.g. beta=4, seed=0).

  ConfigError (one line) when the workdir holds no trained run, or names no single member.
  """
  run = resolve(workdir, member, **overrides)
  stored = _read(workdir_lib.path(run, workdir_lib.CONFIG))
  config = ml_collections.ConfigDict(stored)
  if config.family not in families.FAMILIES:
    raise errors.ConfigError(f"{run} holds a run of the family {config.family!r}, which is not registered; import "
                             "the module that registers it (its config file) before loading")
  ds = data.load(config.dataset, data_dir=config.data_dir, binarize=config.binarize)
  config = config_lib.resolved(config, data.training_size(ds, config.validation_fraction))
  model, params, step = restore(config, ds, run)
  return Trained(config=config, params=params, model=model, dataset=ds, workdir=run, step=step)


def restore(config, ds: data.Dataset, run: str) -> tuple[Any, Any, int]:
  """(model, params, step) of the newest readable checkpoint in `run`, restored by `ae_jax.checkpoints`
  into the train state a run of `config` starts from (`program.initial_state`, as the loop does)."""
  directory = workdir_lib.checkpoint_dir(run)
  if not os.path.isdir(directory):
    raise errors.ConfigError(f"{run} has no checkpoints/; train it first (experiments/train.py --workdir={run})")
  model, template = program.initial_state(config, ds)
  checkpointer = checkpoints.Checkpointer(directory)
  try:
    state = checkpointer.restore_latest(template)
  finally:
    checkpointer.close()
  if state is None:
    raise errors.ConfigError(f"{run} has no readable checkpoint; train it (again) with its own command")
  return model, jax.device_get(state.params), int(state.step)


def resolve(workdir: str, member: str | None = None, **overrides) -> str:
  """The run folder `load` reads: `workdir` itself for a single run, else the sweep member named."""
  if os.path.exists(workdir_lib.path(workdir, workdir_lib.CONFIG)):
    if member is not None or overrides:
      raise errors.ConfigError(f"{workdir} holds a single run, not a sweep; load it without a member")
    return workdir
  sweep = workdir_lib.read_sweep(workdir)
  if sweep is None:
    raise errors.ConfigError(f"{workdir} holds no run ({workdir_lib.CONFIG}) and no sweep ({workdir_lib.SWEEP}); "
                             "give the --workdir a run or a sweep was trained into")
  names, members = sweep["member_names"], sweep["members"]
  if member == BEST:
    best = sweep.get(workdir_lib.SWEEP_BEST)
    if not best:
      raise errors.ConfigError(f"the sweep in {workdir} has no selected member; rerun its sweep.py command with "
                               "--select=METRIC (it re-reports without training), or name a member")
    member = best["member"]
  if member is not None:
    if member not in names:
      raise errors.ConfigError(f"no member {member!r} in {workdir}; its members are {', '.join(names)}")
    return os.path.join(workdir, member)
  wanted = json.loads(json.dumps(overrides, default=str))  # As sweep.json holds them: tuples as lists.
  matches = [n for n, m in zip(names, members) if all(k in m and m[k] == v for k, v in wanted.items())]
  if len(matches) != 1:
    what = "no member has" if not matches else f"{len(matches)} members ({', '.join(matches[:4])}) have"
    raise errors.ConfigError(f"{what} {wanted or 'no overrides'} in {workdir}; name one member of "
                             f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''} or \"best\"")
  return os.path.join(workdir, matches[0])


def _read(file: str) -> dict[str, Any]:
  with open(file, encoding="utf-8") as f:
    return json.load(f)
