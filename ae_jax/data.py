"""Datasets as host arrays: images (N, H, W, C) float32 in [0, 1] and integer labels.

Sources: `digits` (scikit-learn's 1,797 8x8 digits, embedded, offline), `npz:PATH` (Keras layout:
x_train, y_train, x_test, y_test) or any tensorflow-datasets name (imported lazily; TensorFlow is only
needed to download and prepare). Anything wrong with the input raises `DataError` with one line that
says what is wrong and how to fix it.
"""

import dataclasses
import json
import os
import socket
from typing import NoReturn

from absl import logging
import numpy as np


class DataError(ValueError):
  """Bad dataset name, file or contents; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  train_images: np.ndarray  # (N, H, W, C) float32 in [0, 1]
  train_labels: np.ndarray  # (N,) int32; -1 where the source has no labels
  test_images: np.ndarray
  test_labels: np.ndarray
  name: str
  # A validation split carved from the training examples (`carve_validation`); None: there is none.
  validation_images: np.ndarray | None = None
  validation_labels: np.ndarray | None = None

  @property
  def example_shape(self) -> tuple[int, ...]:
    return tuple(self.train_images.shape[1:])

  @property
  def has_validation(self) -> bool:
    return self.validation_images is not None

  def validation_as_test(self) -> "Dataset":
    """The same training split with the validation split in the test split's place (to evaluate on it)."""
    return dataclasses.replace(self, test_images=self.validation_images, test_labels=self.validation_labels)


BINARIZE = ("none", "static", "dynamic")
DIGITS_TEST_SIZE = 360
# tfds looks for every dataset here first; if its name does not even resolve, the machine is offline.
TFDS_HOST = "storage.googleapis.com"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def load(name: str, *, data_dir: str = "", binarize: str = "none") -> Dataset:
  """Loads `name` ('digits', 'npz:PATH' or a tfds name). 'static' binarization thresholds at 0.5 here;
  'dynamic' leaves images grey (the training step resamples them) and binarizes test once, with seed 0.
  """
  if binarize not in BINARIZE:
    raise DataError(f"unknown binarize {binarize!r}; choose one of {', '.join(BINARIZE)}")
  if name == "digits":
    ds = _check_consistent(_digits(), "digits")
  elif name.startswith("npz:"):
    ds = _check_consistent(_npz(name[4:]), f"npz {name[4:]!r}", names=NPZ_NAMES)
  else:
    ds = _check_consistent(_tfds(name, data_dir), f"tfds {name!r}")
  if binarize == "static":
    ds = dataclasses.replace(ds, train_images=_threshold(ds.train_images), test_images=_threshold(ds.test_images))
  elif binarize == "dynamic":
    ds = dataclasses.replace(ds, test_images=bernoulli_sample(ds.test_images, seed=0))
  return ds


VALIDATION_SEED = 0  # The carved subset is the same for every run and member of a dataset.
VALIDATION_BINARIZE_SEED = 2  # binarize=dynamic: validation images are binarized once, as test images are.


def training_size(ds: Dataset, fraction: float) -> int:
  """How many training examples `carve_validation(ds, fraction)` leaves to train on (without carving)."""
  n = len(ds.train_images)
  size = int(round(fraction * n))
  if fraction and not 0 < size < n:
    raise DataError(f"--config.validation_fraction={fraction} of {n} training examples of {ds.name} leaves "
                    f"{size} for validation and {n - size} for training; choose a fraction that leaves both")
  return n - size


def carve_validation(ds: Dataset, fraction: float, *, binarize: str = "none") -> Dataset:
  """`ds` with `fraction` of its training examples moved to a validation split (0: `ds` as it is).

  The subset is a fixed seeded draw, the same for every member of a sweep, so selecting on it compares
  like with like; what training sees is the rest. Under binarize=dynamic the validation images are
  binarized once (seeded), as `load` does for the test split. Raises DataError if either part is empty.
  """
  if not fraction:
    return ds
  n = len(ds.train_images)
  size = n - training_size(ds, fraction)
  order = np.random.default_rng(VALIDATION_SEED).permutation(n)
  held, kept = np.sort(order[:size]), np.sort(order[size:])
  images = ds.train_images[held]
  if binarize == "dynamic":
    images = bernoulli_sample(images, seed=VALIDATION_BINARIZE_SEED)
  return dataclasses.replace(ds, train_images=ds.train_images[kept], train_labels=ds.train_labels[kept],
                             validation_images=images, validation_labels=ds.train_labels[held])


def bernoulli_sample(images: np.ndarray, *, seed: int) -> np.ndarray:
  """One binary draw of grey images in [0, 1] (pixel on with its intensity's probability), seeded."""
  return (np.random.default_rng(seed).random(images.shape) < images).astype(np.float32)


def _threshold(x: np.ndarray) -> np.ndarray:
  return (x > 0.5).astype(np.float32)


def _digits() -> Dataset:
  from sklearn import datasets as skdatasets  # pylint: disable=g-import-not-at-top
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top

  digits = skdatasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]  # Pixel values are 0..16.
  x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
      images, digits.target, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=digits.target)
  return Dataset(x_tr, y_tr, x_te, y_te, "digits")


def _npz(path: str) -> Dataset:
  if not path:
    raise DataError("dataset 'npz:' needs a path, e.g. --config.dataset=npz:/data/mnist.npz")
  if not os.path.isfile(path):
    raise DataError(f"npz file not found: {path!r}; check the path after 'npz:'")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception as e:  # Zip, pickle and format errors all mean the same to the user.
    raise DataError(f"cannot read {path!r} as an .npz file ({type(e).__name__}: {e})") from None
  missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
  if missing:
    raise DataError(f"{path!r} lacks keys {missing}; an npz needs x_train, y_train, x_test, y_test "
                    f"(Keras layout), found {sorted(arrays)}")
  return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], f"npz:{path}")


SPLIT_NAMES = ("train", "train labels", "test", "test labels")
NPZ_NAMES = ("x_train", "y_train", "x_test", "y_test")
NO_LABEL = -1  # A label of -1 means the example has none.
_INT32_MAX = np.iinfo(np.int32).max


def _check_consistent(ds: Dataset, source: str, names: tuple[str, ...] = SPLIT_NAMES) -> Dataset:
  """Checks each split and the two against each other; returns images float32 in [0, 1], labels int32.

  Every source's raw arrays pass through here, so a mismatch fails in one line naming `source` and
  both splits (`names`: train images, train labels, test images, test labels; an npz's keys)
  instead of deep in the model or the evaluation.
  """
  xtr_name, ytr_name, xte_name, yte_name = names

  def fail(message: str) -> NoReturn:
    raise DataError(f"{source}: {message}")

  x_tr, x_te = np.asarray(ds.train_images), np.asarray(ds.test_images)
  y_tr, y_te = np.asarray(ds.train_labels), np.asarray(ds.test_labels)
  for x, name in ((x_tr, xtr_name), (x_te, xte_name)):
    if x.dtype.kind not in "uif":
      fail(f"{name} has dtype {x.dtype}; expected uint8 or float images")
    if x.ndim not in (2, 3, 4):
      fail(f"{name} has shape {x.shape}; expected (N, D), (N, H, W) or (N, H, W, C)")
  if not len(x_tr) or not len(x_te):
    empty, other, n = (xtr_name, xte_name, len(x_te)) if not len(x_tr) else (xte_name, xtr_name, len(x_tr))
    fail(f"{empty} is empty but {other} has {n} examples; both splits need examples"
         if n else f"{xtr_name} and {xte_name} are both empty; both splits need examples")
  raw_tr, raw_te = x_tr.dtype, x_te.dtype
  x_tr, x_te = _images(x_tr, xtr_name, fail), _images(x_te, xte_name, fail)
  if x_tr.shape[1:] != x_te.shape[1:]:
    hint = (f" (channels {x_tr.shape[-1]} vs {x_te.shape[-1]})"
            if x_tr.ndim == x_te.ndim == 4 and x_tr.shape[1:3] == x_te.shape[1:3] else "")
    fail(f"{xtr_name} examples are {x_tr.shape[1:]} but {xte_name} examples are {x_te.shape[1:]}{hint}; "
         "both splits must have the same shape")
  if (raw_tr.kind == "f") != (raw_te.kind == "f"):
    fail(f"{xtr_name} is {raw_tr} but {xte_name} is {raw_te}; integer pixels are divided by 255 "
         "and float pixels used as they are, so store both splits with the same dtype")

  for y, x, name in ((y_tr, x_tr, ytr_name), (y_te, x_te, yte_name)):
    if y.shape != (len(x),):
      images = xtr_name if x is x_tr else xte_name
      fail(f"{name} has shape {y.shape} but {images} has {len(x)} examples; expected ({len(x)},), "
           "one label per image")
    if y.dtype.kind not in "ui":
      fail(f"{name} has dtype {y.dtype}; expected integer class labels (-1 for none)")
    bad = (y < NO_LABEL) | (y > _INT32_MAX)
    if bad.any():
      fail(f"{name} holds {int(bad.sum())} labels outside [-1, {_INT32_MAX}] (e.g. {y[bad][0]}); "
           "labels are class indices >= 0, or -1 for an unlabelled example")
  train_classes = set(np.unique(y_tr).tolist()) - {NO_LABEL}
  if train_classes:
    unseen = sorted(set(np.unique(y_te).tolist()) - train_classes - {NO_LABEL})
    if unseen:
      shown = ", ".join(map(str, unseen[:5])) + (", ..." if len(unseen) > 5 else "")
      fail(f"{yte_name} has classes {{{shown}}} that {ytr_name} never has; every test class must appear "
           "in train (re-split the data, or set their labels to -1)")
  return dataclasses.replace(ds, train_images=x_tr, train_labels=y_tr.astype(np.int32),
                             test_images=x_te, test_labels=y_te.astype(np.int32))


def _images(x: np.ndarray, name: str, fail) -> np.ndarray:
  """Converts one split's images to (N, D) or (N, H, W, C) float32 in [0, 1]; `fail` for values it
  cannot scale."""
  if x.ndim == 3:
    x = x[..., None]
  if x.dtype.kind in "ui":
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > 255:
      fail(f"{name} holds integers in [{lo}, {hi}]; expected 0..255 pixel values")
    return x.astype(np.float32) / 255.0
  x = x.astype(np.float32)
  bad = ~np.isfinite(x)
  if bad.any():
    fail(f"{name} has {int(bad.sum())} NaN or infinite values; clean or drop those examples")
  lo, hi = float(x.min()), float(x.max())
  if lo < 0.0 or hi > 1.0:
    hint = " (looks like 0..255: divide by 255 or store uint8)" if hi <= 255.0 and lo >= 0.0 else ""
    fail(f"{name} has values in [{lo:g}, {hi:g}]; float images must lie in [0, 1]{hint}")
  return x


def _tfds(name: str, data_dir: str) -> Dataset:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError(f"dataset {name!r} needs tensorflow-datasets: pip install tensorflow-datasets "
                    "tensorflow-cpu, or use 'digits' or 'npz:PATH'") from None
  _check_feature_classes(name, data_dir)
  data_dir = data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and friends.
    raise DataError(f"unknown dataset {name!r}: use 'digits', 'npz:PATH' or a tensorflow-datasets name "
                    f"such as mnist, fashion_mnist, binarized_mnist, cifar10 ({type(e).__name__})") from None
  features = builder.info.features
  if "image" not in features:
    raise DataError(f"tfds dataset {name!r} has no 'image' feature (it has {sorted(features)}); "
                    "ae_jax needs an image dataset")
  splits = list(builder.info.splits) or ["train", "test"]
  if "train" not in splits or "test" not in splits:
    raise DataError(f"tfds dataset {name!r} has splits {splits}; ae_jax needs 'train' and 'test'")
  try:
    if not builder.is_prepared():
      if _downloads_for_real(builder):
        _check_resolves(TFDS_HOST)
      logging.info("Downloading and preparing tfds %r (needs network; offline, use data_dir or npz:PATH).", name)
    builder.download_and_prepare()
    arrays = {split: _tfds_arrays(builder.as_dataset(split=split), tfds) for split in ("train", "test")}
  except Exception as e:  # Network, permission and preparation errors.
    msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    raise DataError(
        f"could not download or prepare tfds dataset {name!r} ({type(e).__name__}: {msg}); "
        "without network access, copy a prepared copy and pass --config.data_dir=DIR, "
        "or use --config.dataset=npz:PATH") from None
  (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
  return Dataset(x_tr, y_tr, x_te, y_te, name)


FEATURE_CLASS_KEYS = ("pythonClassName", "python_class_name", "type")  # features.json: a class tfds imports.


def _check_feature_classes(name: str, data_dir: str) -> None:
  """Refuses a prepared dataset under `data_dir` whose features.json names a class outside tfds: tfds
  imports the module of every class named there, which would run code a data folder chose."""
  root = os.path.join(data_dir, name.split(":")[-1].split("/")[0]) if data_dir else ""
  if not root or not os.path.isdir(root):
    return
  for folder, _, files in os.walk(root):
    if "features.json" not in files:
      continue
    file = os.path.join(folder, "features.json")
    try:
      with open(file, encoding="utf-8") as f:
        tree = json.load(f)
    except (OSError, ValueError):
      continue  # Unreadable: tfds reports it.
    for cls in _class_names(tree):
      if not cls.startswith("tensorflow_datasets."):
        raise DataError(f"--config.data_dir={data_dir}: {file} names the class {cls!r}, whose module tfds would "
                        "import (running its code); only tensorflow_datasets' own feature types are loaded")


def _class_names(tree) -> list[str]:
  if isinstance(tree, dict):
    own = [v for k, v in tree.items() if k in FEATURE_CLASS_KEYS and isinstance(v, str) and "." in v]
    return own + [c for v in tree.values() for c in _class_names(v)]
  if isinstance(tree, list):
    return [c for v in tree for c in _class_names(v)]
  return []


def _downloads_for_real(builder) -> bool:
  """False when `download_and_prepare` is not tfds' own (tfds.testing.mock_data replaces it)."""
  return type(builder).download_and_prepare.__module__.startswith("tensorflow_datasets.core")


def _check_resolves(host: str) -> None:
  """Raises ConnectionError at once when `host` has no address, instead of tfds retrying for minutes.

  Only name resolution is checked: a host that resolves but is blocked is left to tfds, which falls
  back to each dataset's own source. Behind a proxy the local resolver proves nothing, so it is skipped.
  """
  if any(os.environ.get(v) for v in PROXY_VARIABLES):
    return
  try:
    socket.getaddrinfo(host, 443)
  except OSError as e:
    raise ConnectionError(f"cannot resolve {host} ({e}): no network") from None


def _tfds_arrays(ds, tfds) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole split to numpy in chunks (tfds' batch_size=-1 is unreliable on generated data)."""
  images, labels = [], []
  for ex in tfds.as_numpy(ds.batch(4096)):
    images.append(ex["image"])
    labels.append(ex["label"] if "label" in ex else np.full(len(ex["image"]), NO_LABEL, np.int32))
  if not images:  # An empty split: _check_consistent says so.
    return np.zeros((0, 1), np.uint8), np.zeros((0,), np.int32)
  return np.concatenate(images), np.concatenate(labels)
