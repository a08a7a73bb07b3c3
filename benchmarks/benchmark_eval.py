"""The end-of-run evaluation's cost: the VAE's IWAE estimate against its matmul bound, and compile time.

  python -m benchmarks.benchmark_eval --out=bench_eval.jsonl     # about 2 min on 2 CPU cores
  python -m benchmarks.benchmark_eval --quick                    # CI: tiny; the numbers mean nothing

IWAE: the importance-sampled log-likelihood (`evaluators.likelihood_metrics`, the evaluation's own)
of the IWAE paper's VAE (784-200-200-50, tanh; random parameters, random binary MNIST-shaped images)
with `--samples` samples for `--images` images. Its bound is the decoder's matmuls alone:
2 x images x samples x (decoder multiply-accumulates) FLOPs at the float32 matmul rate measured just
before and after in the same process (`harness.make_matmul`); `vs_bound` = time / bound. The first
call (compiling) is timed apart on a few images.

Compile: `report.evaluate_model` of the default digits config for one model and then for the same
model with other parameters (a second member of a sweep): the second reuses every compiled program.
"""

import dataclasses
import time

from absl import app
from absl import flags
import jax
import numpy as np

from ae_jax import cli
from ae_jax import data
from ae_jax import evaluators
from ae_jax import families
from ae_jax import models
from ae_jax import report
from benchmarks import harness

_IMAGES = flags.DEFINE_integer("images", 1000, "Test images of the IWAE estimate.", lower_bound=1)
_SAMPLES = flags.DEFINE_integer("samples", 5000, "Importance samples per image.", lower_bound=1)
# Also harness's --quick and --out.


def iwae(images: int, samples: int, matmul_size: int) -> dict:
  config = harness.family_config("vae", 128, widths=(200, 200), latent_dim=50, activation="tanh",
                                 iwae_samples=samples)
  model = families.model_from_config(config, harness.EXAMPLE_SHAPE)
  params = jax.device_get(models.init(model, jax.random.key(0), harness.EXAMPLE_SHAPE))
  rng = np.random.default_rng(0)
  x = (rng.random((images, *harness.EXAMPLE_SHAPE)) < 0.13).astype(np.float32)  # MNIST's ink fraction.
  labels = np.zeros(images, np.int32)
  ctx = evaluators.context(config, model, params, data.Dataset(x, labels, x, labels, "random"), jax.random.key(1))
  matmul = harness.make_matmul(matmul_size, jax.make_mesh((1,), ("data",)))

  def estimate(n: int) -> float:
    part = dataclasses.replace(ctx, ds=dataclasses.replace(ctx.ds, test_images=x[:n], test_labels=labels[:n]))
    start = time.perf_counter()
    evaluators.likelihood_metrics(part)
    return time.perf_counter() - start

  first_s = estimate(min(images, 8))
  flops = [matmul()]
  seconds = estimate(images)
  flops.append(matmul())
  decode = lambda z: model.apply({"params": params}, z, method="decode")
  decoder_macs = harness.count_macs(jax.make_jaxpr(decode)(np.zeros((1, config.latent_dim), np.float32)).jaxpr)
  bound_s = 2 * images * samples * decoder_macs / float(np.median(flops))
  return {"part": "iwae", "model": "784-200-200-50 (tanh)", "images": images, "samples": samples, "seconds": seconds,
          "examples_per_s": images / seconds, "bound_s": bound_s, "vs_bound": seconds / bound_s,
          "matmul_gflops": float(np.median(flops)) / 1e9, "decoder_macs_per_sample": decoder_macs,
          "first_call_s": first_s}


def compile_time() -> dict:
  config = harness.family_config("vae", 128, widths=(128,), latent_dim=8)
  config.dataset = "digits"
  ds = data.load("digits")
  model = families.model_from_config(config, ds.example_shape)
  times = []
  for seed in (0, 1):
    params = jax.device_get(models.init(model, jax.random.key(seed), ds.example_shape))
    start = time.perf_counter()
    report.evaluate_model(config, model, params, ds, jax.random.key(2))
    times.append(time.perf_counter() - start)
  return {"part": "eval_compile", "model": "digits vae 64-128-8", "first_member_s": times[0],
          "second_member_s": times[1], "compile_s": times[0] - times[1]}


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags look like --images=1000 --samples=5000")
  images, samples, matmul_size = _IMAGES.value, _SAMPLES.value, 2048
  if harness.QUICK.value:
    images, samples, matmul_size = 4, 8, 128
  with harness.json_lines(harness.OUT.value) as emit:
    emit(iwae(images, samples, matmul_size))
    emit(compile_time())


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
