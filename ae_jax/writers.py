"""Metric writers: TensorBoard and logs through clu, plus a JSON-lines file that scripts can read."""

import json
import os

from clu import metric_writers
import jax
import numpy as np

from ae_jax import workdir as workdir_lib


class JsonlWriter(metric_writers.MetricWriter):
  """Appends one JSON object per `write_scalars` call: {"step": ..., name: value, ...}."""

  def __init__(self, path: str):
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars):
    row = {"step": int(step)}
    for k, v in scalars.items():
      v = float(np.asarray(v))
      row[k] = workdir_lib.finite_or_text(v)  # JSON has no NaN; keep it readable.
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()

  def write_hparams(self, hparams):
    workdir_lib.write_text(os.path.join(os.path.dirname(self._file.name), workdir_lib.HPARAMS),
                           json.dumps(hparams, indent=2, sort_keys=True, default=str))

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def create(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard + logging + `metrics.jsonl` in `workdir` on process 0; logging only elsewhere."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(just_logging=True)
  os.makedirs(workdir, exist_ok=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(os.path.join(workdir, workdir_lib.METRICS)),
  ])
