"""PNG pictures of reconstructions, codes, decoder features and training curves (host-side numpy).

Everything here takes numpy (or jax) arrays already on the host and writes a PNG, returning its
path as a string. Plots use matplotlib's object API with the Agg canvas (no pyplot, no display, no
global backend switch), so they are safe in headless jobs and threads.
"""

from collections.abc import Mapping, Sequence
import math
import os
from typing import Any

import matplotlib
from matplotlib import figure as mpl_figure
from matplotlib.backends import backend_agg
import numpy as np
from PIL import Image

from ae_jax import workdir as workdir_lib

MIN_TILE_PIXELS = 32  # Tiles are upscaled (integer factor) until their shorter side is at least this.


def _as_tiles(row: Any) -> np.ndarray:
  """One grid row as (N, H, W, 3) floats in [0, 1]; (N, D) with square D becomes greyscale."""
  row = np.asarray(row, dtype=np.float32)
  if row.ndim == 2:
    side = math.isqrt(row.shape[1])
    if side * side != row.shape[1]:
      raise ValueError(f"vector rows need a perfect-square length, got {row.shape[1]}")
    row = row.reshape(row.shape[0], side, side, 1)
  elif row.ndim == 3:  # (N, H, W) greyscale.
    row = row[..., None]
  if row.ndim != 4 or row.shape[-1] not in (1, 3):
    raise ValueError(f"rows must be (N, H, W, C) with C in (1, 3), (N, H, W) or (N, D); got {row.shape}")
  if row.shape[0] == 0:
    raise ValueError("rows must not be empty")
  row = np.clip(np.nan_to_num(row, nan=0.0), 0.0, 1.0)
  return np.repeat(row, 3, axis=-1) if row.shape[-1] == 1 else row


def image_grid(rows: Sequence[np.ndarray], *, pad: int = 1, background: float = 1.0) -> np.ndarray:
  """Stacks batches of images as the rows of one (H', W', 3) uint8 picture.

  Each row is an (N, H, W, C) batch in [0, 1] (C = 1 or 3; values are clipped), an (N, H, W)
  greyscale batch, or (N, D) vectors with D a perfect square (shown as square greyscale). Rows may
  hold different numbers of images (short rows are left blank on the right) but must share H and W.
  Tiles are upscaled by an integer nearest-neighbour factor so that small images (8x8 digits) are
  at least MIN_TILE_PIXELS on a side; `pad` background pixels separate tiles and frame the grid.
  """
  if pad < 0:
    raise ValueError(f"pad must be non-negative, got {pad}")
  if not 0.0 <= background <= 1.0:
    raise ValueError(f"background must be in [0, 1], got {background}")
  tiles = [_as_tiles(r) for r in rows]
  if not tiles:
    raise ValueError("image_grid needs at least one row")
  height, width = tiles[0].shape[1:3]
  if any(t.shape[1:3] != (height, width) for t in tiles):
    raise ValueError(f"all rows must share one image size, got {sorted({t.shape[1:3] for t in tiles})}")
  scale = max(1, math.ceil(MIN_TILE_PIXELS / min(height, width)))
  tile_h, tile_w = height * scale, width * scale
  cols = max(t.shape[0] for t in tiles)
  grid = np.full((pad + len(tiles) * (tile_h + pad), pad + cols * (tile_w + pad), 3), background, np.float32)
  for i, row in enumerate(tiles):
    big = row.repeat(scale, axis=1).repeat(scale, axis=2)
    top = pad + i * (tile_h + pad)
    for j, tile in enumerate(big):
      left = pad + j * (tile_w + pad)
      grid[top:top + tile_h, left:left + tile_w] = tile
  return np.round(grid * 255.0).astype(np.uint8)


def save_png(path: str | os.PathLike, image_uint8: np.ndarray) -> str:
  """Writes an (H, W), (H, W, 3) or (H, W, 4) uint8 array as a PNG (creating parent folders)."""
  image = np.asarray(image_uint8)
  if image.dtype != np.uint8:
    raise ValueError(f"image must be uint8, got {image.dtype}")
  if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
    raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with workdir_lib.atomic(path) as temporary:
    Image.fromarray(image).save(temporary, format="PNG")
  return path


def save_rows(path: str | os.PathLike, rows: Sequence[np.ndarray], *, pad: int = 1) -> str:
  """`image_grid(rows)` saved as a PNG, e.g. rows (inputs, noisy inputs, reconstructions)."""
  return save_png(path, image_grid(rows, pad=pad))


def _new_figure(width: float = 6.0, height: float = 5.0) -> mpl_figure.Figure:
  fig = mpl_figure.Figure(figsize=(width, height), dpi=100)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _save_figure(path: str | os.PathLike, fig: mpl_figure.Figure) -> str:
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with workdir_lib.atomic(path) as temporary:
    fig.savefig(temporary, format="png")
  return path


def _project_2d(codes: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
  """Codes (N, k) to (N, 2): as is for k = 2, top-2 PCA for k > 2, (z, 0) for k = 1."""
  k = codes.shape[1]
  if k == 1:
    return np.concatenate([codes, np.zeros_like(codes)], axis=1), ("z", "")
  if k == 2:
    return codes, ("z[0]", "z[1]")
  centred = codes - codes.mean(axis=0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:2].T, ("PC 1 of codes", "PC 2 of codes")


def save_latent_scatter(
    path: str | os.PathLike, codes: np.ndarray, labels: np.ndarray | None, *, title: str | None = None
) -> str:
  """2-D scatter of codes (N, k) coloured by integer label; PCA to 2 dims when k > 2.

  1-D codes are plotted against zero. `labels=None` plots a single colour.
  """
  codes = np.asarray(codes, dtype=np.float64)
  codes = codes.reshape(codes.shape[0], -1) if codes.ndim > 1 else codes[:, None]
  if codes.shape[0] == 0 or codes.shape[1] == 0:
    raise ValueError(f"codes must be a non-empty (N, k) array, got {codes.shape}")
  points, (xlabel, ylabel) = _project_2d(codes)
  fig = _new_figure()
  ax = fig.add_subplot()
  if labels is None:
    ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
  else:
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != codes.shape[0]:
      raise ValueError(f"got {labels.shape[0]} labels for {codes.shape[0]} codes")
    classes = np.unique(labels)
    cmap = matplotlib.colormaps["tab10" if classes.size <= 10 else "tab20"]
    for i, c in enumerate(classes):
      mask = labels == c
      ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=str(c))
    if classes.size <= 20:
      ax.legend(markerscale=2, fontsize="small", loc="best")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if codes.shape[1] == 1:
    ax.set_yticks([])
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return _save_figure(path, fig)


def save_filters(
    path: str | os.PathLike, decoder_weights: np.ndarray, image_shape: Sequence[int], *, pad: int = 1
) -> str:
  """Tiles each latent unit's decoded pattern (a row of the (k, D) matrix) as an image.

  Each row is min-max normalised on its own (a constant row shows mid-grey), because features differ
  in scale and only their shape matters. Units fill a near-square grid, row-major.
  """
  weights = np.asarray(decoder_weights, dtype=np.float64)
  image_shape = tuple(image_shape)
  if weights.ndim != 2 or weights.shape[0] == 0:
    raise ValueError(f"decoder_weights must be a non-empty (k, D) matrix, got {weights.shape}")
  if weights.shape[1] != math.prod(image_shape):
    raise ValueError(f"rows of length {weights.shape[1]} cannot be shown as images of shape {image_shape}")
  if len(image_shape) not in (2, 3):
    raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {image_shape}")
  low = weights.min(axis=1, keepdims=True)
  span = weights.max(axis=1, keepdims=True) - low
  normalised = np.where(span > 0, (weights - low) / np.where(span > 0, span, 1.0), 0.5)
  images = normalised.reshape(weights.shape[0], *image_shape)
  cols = math.ceil(math.sqrt(weights.shape[0]))
  rows = [images[i:i + cols] for i in range(0, weights.shape[0], cols)]
  return save_rows(path, rows, pad=pad)


def save_curves(
    path: str | os.PathLike,
    history: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    *,
    title: str | None = None,
) -> str:
  """Training curves, value against "step", from a list of metric dicts: one panel per term, with a
  key and its `test_` twin (e.g. loss_rec and test_loss_rec) overlaid, so over-fitting shows at a
  glance.

  Records without "step" or the key (or with a non-finite value) are skipped, as are keys found in
  no record; a panel uses a log y-axis when all its values are positive. With no data at all the
  picture says so instead of failing, since this runs at the end of training.
  """
  panels: dict[str, dict[str, np.ndarray]] = {}  # term -> {"train" | "test": (n, 2) points}
  for key in keys:
    points = []
    for record in history:
      if "step" in record and key in record:
        value = float(np.asarray(record[key]))
        if math.isfinite(value):
          points.append((float(np.asarray(record["step"])), value))
    if points:
      term, split = (key[len("test_"):], "test") if key.startswith("test_") else (key, "train")
      panels.setdefault(term, {})[split] = np.array(sorted(points))
  fig = _new_figure(6.0, 2.2 * max(1, len(panels)) + 0.6)
  if not panels:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, f"no data for {list(keys)}", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
  for i, (term, lines) in enumerate(panels.items()):
    ax = fig.add_subplot(len(panels), 1, i + 1)
    for split, points in sorted(lines.items(), key=lambda item: item[0] != "train"):
      ax.plot(points[:, 0], points[:, 1], marker="." if len(points) < 50 else None, label=split,
              linestyle="-" if split == "train" else "--")
    if all(np.all(points[:, 1] > 0) for points in lines.values()):
      ax.set_yscale("log")
    ax.set_ylabel(term)
    ax.grid(True, alpha=0.3)
    if len(lines) > 1:
      ax.legend(loc="upper right", fontsize="small")
    if i == len(panels) - 1:
      ax.set_xlabel("step")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save_figure(path, fig)


def save_search(path: str | os.PathLike, curves: Mapping[str, Sequence[tuple[float, float]]], *,
                metric: str, marks: Sequence[int] = (), best: str | None = None,
                hparams: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]] | None = None,
                title: str | None = None) -> str:
  """A search's picture: `metric` against step for every member (`curves`: {member: [(step, value)]}),
  with its decision steps (`marks`: rungs or exploits) as vertical lines and `best` drawn thick; with
  `hparams` ({key: {member: [(step, value)]}}, PBT's schedules), one panel per hyperparameter below."""
  hparams = hparams or {}
  fig = _new_figure(7.0, 3.0 * (1 + len(hparams)) + 0.6)
  panels = [(metric, curves)] + [(key, lines) for key, lines in hparams.items()]
  for i, (name, lines) in enumerate(panels):
    ax = fig.add_subplot(len(panels), 1, i + 1)
    for member, points in lines.items():
      points = np.array([p for p in points if math.isfinite(p[1])]).reshape(-1, 2)
      if len(points):
        ax.plot(points[:, 0], points[:, 1], drawstyle="steps-post" if i else "default",
                marker="." if len(points) < 50 and not i else None,
                linewidth=2.5 if member == best else 0.8, alpha=1.0 if member == best else 0.6,
                label=member if member == best else None)
    for step in marks:
      ax.axvline(step, color="grey", linewidth=0.6, linestyle=":")
    if i or all(p[1] > 0 for points in lines.values() for p in points if math.isfinite(p[1])):
      ax.set_yscale("log")
    ax.set_ylabel(name)
    ax.grid(True, alpha=0.3)
    if best and i == 0:
      ax.legend(loc="upper right", fontsize="small")
  fig.axes[-1].set_xlabel("step")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return _save_figure(path, fig)


def interpolate(z_a: np.ndarray, z_b: np.ndarray, num: int) -> np.ndarray:
  """`num` evenly spaced points from z_a to z_b (both included): (num, *z_a.shape), e.g. (num, k).

  Straight lines in latent space; decode them to see whether the code space is smooth.
  """
  z_a, z_b = np.asarray(z_a, dtype=np.float64), np.asarray(z_b, dtype=np.float64)
  if z_a.shape != z_b.shape:
    raise ValueError(f"z_a shape {z_a.shape} does not match z_b shape {z_b.shape}")
  if num < 2:
    raise ValueError(f"num must be at least 2 to include both endpoints, got {num}")
  t = np.linspace(0.0, 1.0, num).reshape(num, *([1] * z_a.ndim))
  return (1.0 - t) * z_a + t * z_b
