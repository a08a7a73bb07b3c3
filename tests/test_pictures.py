"""Tests for ae_jax.pictures: grid shapes and dtypes, valid PNG files, plots, interpolation."""

import numpy as np
from PIL import Image
import pytest

from ae_jax import pictures


def _read_png(path):
  with Image.open(path) as image:
    assert image.format == "PNG"
    image.load()
    return np.asarray(image)


def test_image_grid_upscales_small_greyscale_digits():
  rows = [np.zeros((3, 8, 8, 1)), np.ones((3, 8, 8, 1))]
  grid = pictures.image_grid(rows, pad=1)
  scale = 4  # 8 px -> 32 px tiles.
  assert grid.dtype == np.uint8
  assert grid.shape == (1 + 2 * (8 * scale + 1), 1 + 3 * (8 * scale + 1), 3)
  assert grid[1, 1].tolist() == [0, 0, 0]  # First tile of the black row.
  assert grid[1 + 8 * scale + 1, 1].tolist() == [255, 255, 255]
  assert grid[0, 0].tolist() == [255, 255, 255]  # White frame.


def test_image_grid_vectors_colour_and_ragged_rows():
  vectors = np.linspace(0.0, 1.0, 2 * 64).reshape(2, 64)  # (N, D), D = 8 * 8.
  colour = np.zeros((3, 8, 8, 3))
  colour[..., 0] = 1.0  # Pure red.
  grid = pictures.image_grid([vectors, colour], pad=0)
  assert grid.shape == (2 * 32, 3 * 32, 3)
  assert grid[40, 5].tolist() == [255, 0, 0]
  assert grid[10, 2 * 32 + 5].tolist() == [255, 255, 255]  # Row 1 is short: blank background.
  big = pictures.image_grid([np.full((1, 40, 40), 2.0)], pad=2)  # No upscaling; values clipped.
  assert big.shape == (44, 44, 3) and big[2:42, 2:42].min() == 255


def test_image_grid_rejects_bad_rows():
  with pytest.raises(ValueError, match="perfect-square"):
    pictures.image_grid([np.zeros((2, 10))])
  with pytest.raises(ValueError, match="share one image size"):
    pictures.image_grid([np.zeros((1, 8, 8, 1)), np.zeros((1, 4, 4, 1))])
  with pytest.raises(ValueError, match="at least one row"):
    pictures.image_grid([])


def test_save_rows_writes_a_png_of_the_grid(tmp_path):
  rows = [np.random.default_rng(0).uniform(size=(4, 8, 8, 1)), np.zeros((4, 8, 8, 1))]
  path = pictures.save_rows(tmp_path / "sub" / "rows.png", rows)
  assert path == str(tmp_path / "sub" / "rows.png")
  np.testing.assert_array_equal(_read_png(path), pictures.image_grid(rows))
  with pytest.raises(ValueError, match="uint8"):
    pictures.save_png(tmp_path / "bad.png", np.zeros((4, 4, 3)))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_save_latent_scatter(tmp_path, k):
  rng = np.random.default_rng(k)
  codes, labels = rng.normal(size=(60, k)), rng.integers(0, 3, 60)
  image = _read_png(pictures.save_latent_scatter(tmp_path / f"scatter_{k}.png", codes, labels, title="codes"))
  assert image.shape[:2] == (500, 600)
  assert image.std() > 0  # Something was drawn.
  with pytest.raises(ValueError, match="labels"):
    pictures.save_latent_scatter(tmp_path / "bad.png", codes, labels[:10])


def test_save_filters(tmp_path):
  weights = np.random.default_rng(1).normal(size=(5, 36))
  weights[4] = 3.0  # A constant feature is shown mid-grey, not a division by zero.
  image = _read_png(pictures.save_filters(tmp_path / "filters.png", weights, (6, 6)))
  tile = 6 * 6  # 6 px -> 36 px tiles; 5 units fill a 2 x 3 grid.
  assert image.shape == (1 + 2 * (tile + 1), 1 + 3 * (tile + 1), 3)
  assert image[1 + tile + 1 + 3, 1 + tile + 1 + 3].tolist() == [128, 128, 128]  # Unit 4 (row 1, col 1).
  with pytest.raises(ValueError, match="cannot be shown"):
    pictures.save_filters(tmp_path / "bad.png", weights, (5, 5))


def test_save_curves_skips_missing_keys(tmp_path):
  history = [{"step": s, "loss": 1.0 / (s + 1), "accuracy": s / 10 - 0.5} for s in range(10)]
  history.append({"loss": 0.01})  # No step: skipped.
  path = pictures.save_curves(tmp_path / "curves.png", history, ["loss", "accuracy", "missing"])
  assert _read_png(path).shape[:2] == (500, 600)  # Two panels: 2.2 * 2 + 0.6 inches at 100 dpi.
  empty = pictures.save_curves(tmp_path / "empty.png", history, ["missing"])
  assert _read_png(empty).ndim == 3


def test_save_curves_overlays_train_and_test_of_a_term_in_one_panel(tmp_path):
  history = [{"step": s, "loss": 1.0 / (s + 1), "loss_rec": 2.0 / (s + 1)} for s in range(1, 10)]
  history += [{"step": s, "test_loss": 1.5 / s, "test_loss_rec": 2.5 / s} for s in (5, 9)]
  keys = ["loss", "test_loss", "loss_rec", "test_loss_rec"]
  path = pictures.save_curves(tmp_path / "curves.png", history, keys)
  assert _read_png(path).shape[:2] == (500, 600)  # Two panels (loss, loss_rec), not four.
  only_test = pictures.save_curves(tmp_path / "test.png", history, ["test_loss"])
  assert _read_png(only_test).shape[:2] == (280, 600)  # One panel, named after the term.


def test_interpolate_endpoints():
  z_a, z_b = np.array([0.0, 1.0, 2.0]), np.array([4.0, 1.0, -2.0])
  path = pictures.interpolate(z_a, z_b, 5)
  assert path.shape == (5, 3)
  np.testing.assert_allclose(path[0], z_a)
  np.testing.assert_allclose(path[-1], z_b)
  np.testing.assert_allclose(path[2], (z_a + z_b) / 2)
  with pytest.raises(ValueError, match="does not match"):
    pictures.interpolate(z_a, z_b[:2], 3)
  with pytest.raises(ValueError, match="at least 2"):
    pictures.interpolate(z_a, z_b, 1)
