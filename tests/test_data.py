"""Datasets load to (N, H, W, C) float32 in [0, 1]; bad input raises DataError with a clear message."""

import socket

import numpy as np
import pytest

from ae_jax import data


def _write_npz(path, **overrides):
  rng = np.random.default_rng(0)
  arrays = {
      "x_train": rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), "y_train": np.arange(20) % 10,
      "x_test": rng.integers(0, 256, (8, 6, 6), dtype=np.uint8), "y_test": np.arange(8) % 10,
  }
  arrays.update(overrides)
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return f"npz:{path}"


def test_digits_is_embedded_and_split():
  ds = data.load("digits")
  assert ds.train_images.shape == (1797 - 360, 8, 8, 1) and ds.test_images.shape == (360, 8, 8, 1)
  assert ds.train_images.dtype == np.float32
  assert ds.train_images.min() == 0.0 and ds.train_images.max() == 1.0
  assert set(np.unique(ds.test_labels)) == set(range(10))
  np.testing.assert_array_equal(ds.test_images, data.load("digits").test_images)  # Fixed split.


def test_npz_uint8_is_scaled(tmp_path):
  ds = data.load(_write_npz(tmp_path / "ok.npz"))
  assert ds.train_images.shape == (20, 6, 6, 1) and ds.example_shape == (6, 6, 1)
  assert 0.0 <= ds.train_images.min() and ds.train_images.max() <= 1.0
  assert ds.train_labels.dtype == np.int32


def test_npz_vectors_and_float_images(tmp_path):
  x = np.random.default_rng(0).random((20, 36)).astype(np.float32)
  ds = data.load(_write_npz(tmp_path / "vec.npz", x_train=x, x_test=x[:8]))
  assert ds.train_images.shape == (20, 36)


def test_binarization(tmp_path):
  spec = _write_npz(tmp_path / "ok.npz")
  static = data.load(spec, binarize="static")
  assert set(np.unique(static.train_images)) <= {0.0, 1.0}
  dynamic = data.load(spec, binarize="dynamic")
  assert len(np.unique(dynamic.train_images)) > 2  # Resampled per step in training.
  assert set(np.unique(dynamic.test_images)) <= {0.0, 1.0}  # Fixed once for evaluation.
  with pytest.raises(data.DataError, match="unknown binarize"):
    data.load(spec, binarize="sometimes")


@pytest.mark.parametrize("overrides,match", [
    ({"y_test": None}, r"lacks keys \['y_test'\]"),
    ({"x_train": np.zeros((20,), np.uint8)}, "expected \\(N, D\\)"),
    ({"x_train": np.zeros((20, 6, 6), np.complex64)}, "dtype complex64"),
    ({"x_train": np.array([["a"] * 6] * 20)}, "dtype <U1"),
    ({"y_train": np.zeros(19, np.int64)}, "one label per image"),
    ({"y_train": np.zeros(20, np.float32)}, "integer class labels"),
    ({"x_train": np.full((20, 6, 6), np.nan, np.float32)}, "NaN"),
    ({"x_train": np.full((20, 6, 6), 2.0, np.float32)}, r"must lie in \[0, 1\]"),
    ({"x_train": np.full((20, 6, 6), -0.5, np.float32)}, r"must lie in \[0, 1\]"),
    ({"x_train": np.full((20, 6, 6), 300, np.int32)}, "0..255"),
])
def test_bad_npz(tmp_path, overrides, match):
  with pytest.raises(data.DataError, match=match):
    data.load(_write_npz(tmp_path / "bad.npz", **overrides))


def test_missing_and_unreadable_files(tmp_path):
  with pytest.raises(data.DataError, match="not found"):
    data.load(f"npz:{tmp_path}/nope.npz")
  (tmp_path / "junk.npz").write_text("not a zip")
  with pytest.raises(data.DataError, match="cannot read"):
    data.load(f"npz:{tmp_path}/junk.npz")
  with pytest.raises(data.DataError, match="needs a path"):
    data.load("npz:")


def test_unknown_dataset_name():
  with pytest.raises(data.DataError, match="unknown dataset 'no_such_dataset_xyz'.*digits"):
    data.load("no_such_dataset_xyz")


def test_tfds_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    ds = data.load("mnist")
  assert ds.train_images.shape == (12, 28, 28, 1) and ds.test_images.shape == (12, 28, 28, 1)
  assert ds.train_images.dtype == np.float32 and ds.train_images.max() <= 1.0


def test_tfds_without_network_says_how_to_work_offline(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")

  def no_network(*args, **kwargs):
    raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
  with pytest.raises(data.DataError, match="could not download.*ConnectionError.*data_dir.*npz:PATH"):
    data.load("mnist", data_dir=str(tmp_path))


def test_tfds_offline_fails_at_once_without_waiting_for_retries(tmp_path, monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  for variable in data.PROXY_VARIABLES:
    monkeypatch.delenv(variable, raising=False)
  resolved = []

  def no_dns(host, *args, **kwargs):
    resolved.append(host)
    raise socket.gaierror(-2, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # tfds' own download_and_prepare is left in place.
  with pytest.raises(data.DataError, match=r"could not download.*'mnist'.*cannot resolve storage\.googleapis"
                     r"\.com.*no network.*data_dir.*npz:PATH"):
    data.load("mnist", data_dir=str(tmp_path))
  assert resolved == [data.TFDS_HOST]  # Checked once, before tfds tried anything.


def test_name_resolution_is_not_checked_behind_a_proxy(monkeypatch):
  def no_dns(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", no_dns)
  for variable in data.PROXY_VARIABLES:
    monkeypatch.delenv(variable, raising=False)
  with pytest.raises(ConnectionError, match="cannot resolve example.org"):
    data._check_resolves("example.org")  # pylint: disable=protected-access
  monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
  data._check_resolves("example.org")  # pylint: disable=protected-access  # Only the proxy knows.


def _raises_one_line(spec, match):
  with pytest.raises(data.DataError, match=match) as info:
    data.load(spec)
  message = str(info.value)
  assert len(message.splitlines()) == 1, message
  if spec.startswith("npz:"):
    assert message.startswith(f"npz {spec[4:]!r}: "), message  # Names the file, then both splits.
  return message


def test_splits_of_different_shapes(tmp_path):
  spec = _write_npz(tmp_path / "s.npz", x_test=np.zeros((8, 7, 7), np.uint8))
  _raises_one_line(spec, r"x_train examples are \(6, 6, 1\) but x_test examples are \(7, 7, 1\); "
                         "both splits must have the same shape")


def test_splits_with_different_channels(tmp_path):
  spec = _write_npz(tmp_path / "c.npz", x_train=np.zeros((20, 6, 6, 1), np.uint8),
                    x_test=np.zeros((8, 6, 6, 3), np.uint8))
  _raises_one_line(spec, r"x_train examples are \(6, 6, 1\) but x_test examples are \(6, 6, 3\) "
                         r"\(channels 1 vs 3\)")


def test_vectors_against_images(tmp_path):
  spec = _write_npz(tmp_path / "v.npz", x_train=np.zeros((20, 36), np.uint8))
  _raises_one_line(spec, r"x_train examples are \(36,\) but x_test examples are \(6, 6, 1\)")


def test_label_count_differs_from_images(tmp_path):
  spec = _write_npz(tmp_path / "n.npz", y_test=np.zeros(7, np.int64))
  _raises_one_line(spec, r"y_test has shape \(7,\) but x_test has 8 examples.*one label per image")


def test_labels_that_are_not_integers(tmp_path):
  spec = _write_npz(tmp_path / "f.npz", y_test=np.zeros(8, np.float64))
  _raises_one_line(spec, "y_test has dtype float64; expected integer class labels")


def test_test_classes_missing_from_train(tmp_path):
  spec = _write_npz(tmp_path / "u.npz", y_test=np.array([0, 1, 2, 10, 11, 1, 2, 3]))
  _raises_one_line(spec, r"y_test has classes \{10, 11\} that y_train never has")


@pytest.mark.parametrize("key", ["y_train", "y_test"])
def test_negative_labels_other_than_minus_one(tmp_path, key):
  labels = np.arange(20 if key == "y_train" else 8) % 10
  labels[3] = -2
  spec = _write_npz(tmp_path / "neg.npz", **{key: labels})
  _raises_one_line(spec, rf"{key} holds 1 labels outside \[-1, 2147483647\] \(e\.g\. -2\)")


def test_minus_one_means_no_labels(tmp_path):
  ds = data.load(_write_npz(tmp_path / "nolabels.npz", y_train=np.full(20, -1), y_test=np.full(8, -1)))
  assert (ds.train_labels == -1).all() and ds.test_labels.dtype == np.int32
  # Unlabelled train: the test labels cannot be compared with anything, so they are not checked.
  data.load(_write_npz(tmp_path / "half.npz", y_train=np.full(20, -1)))


@pytest.mark.parametrize("split,other", [("x_train", "x_test"), ("x_test", "x_train")])
def test_empty_split(tmp_path, split, other):
  label = "y" + split[1:]
  spec = _write_npz(tmp_path / "e.npz", **{split: np.zeros((0, 6, 6), np.uint8), label: np.zeros(0, np.int64)})
  _raises_one_line(spec, rf"{split} is empty but {other} has \d+ examples; both splits need examples")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels(tmp_path, bad):
  x = np.full((8, 6, 6), 0.5, np.float32)
  x[2, 3, 4] = bad
  spec = _write_npz(tmp_path / "nan.npz", x_train=np.full((20, 6, 6), 0.5, np.float32), x_test=x)
  _raises_one_line(spec, "x_test has 1 NaN or infinite values")


def test_pixels_outside_what_the_loader_can_normalise(tmp_path):
  _raises_one_line(_write_npz(tmp_path / "big.npz", x_test=np.full((8, 6, 6), 256, np.int16)),
                   r"x_test holds integers in \[256, 256\]; expected 0..255")
  _raises_one_line(_write_npz(tmp_path / "f255.npz", x_train=np.full((20, 6, 6), 0.5, np.float32),
                              x_test=np.full((8, 6, 6), 200.0, np.float32)),
                   r"x_test has values in \[200, 200\].*divide by 255")


def test_splits_scaled_differently(tmp_path):
  spec = _write_npz(tmp_path / "mixed.npz", x_train=np.full((20, 6, 6), 0.5, np.float32))
  _raises_one_line(spec, "x_train is float32 but x_test is uint8; .*same dtype")


@pytest.mark.parametrize("name,loader,source", [("digits", "_digits", "digits"),
                                                ("mnist", "_tfds", "tfds 'mnist'")])
def test_every_source_is_checked(monkeypatch, name, loader, source):
  rng = np.random.default_rng(0)
  mismatched = data.Dataset(rng.random((10, 8, 8, 1)), np.arange(10) % 2, rng.random((4, 4, 4, 1)),
                            np.arange(4) % 2, name)
  monkeypatch.setattr(data, loader, lambda *args: mismatched)
  message = _raises_one_line(name, r"train examples are \(8, 8, 1\) but test examples are "
                                   r"\(4, 4, 1\)")
  assert message.startswith(f"{source}: ")
