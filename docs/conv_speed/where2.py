# The same jitted SGD step, 4 times: one jit call each, lax.scan, unrolled scan, fori_loop.
# At 3d3f8c8 (phase convs, autodiff gradients) it shows the scan slowdown; at HEAD the convs are
# conv2d (where3-style numbers in docs/conv_speed/NOTES.md; this script was not rerun at HEAD).
#   PYTHONPATH=. python docs/conv_speed/where2.py
import re, time, statistics, sys
import jax, jax.numpy as jnp
from jax import lax
from ae_jax import models
from ae_jax.losses import reconstruction
B = 128
x = jax.random.uniform(jax.random.key(0), (B, 28, 28, 1))
model = models.build(architecture="conv", input_shape=(28, 28, 1), latent_dim=20, widths=(32, 64))
params = models.init(model, jax.random.key(1), (28, 28, 1))
def loss(p, x):
  return reconstruction.from_logits(model.apply({"params": p}, x)[1], x, kind="bernoulli").mean()
g = jax.grad(loss)
def upd(p, x): return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g(p, x))
L = 4
plain = jax.jit(upd)
variants = {
  "plain x4": lambda p, x: [p := plain(p, x) for _ in range(L)][-1],
  "scan": jax.jit(lambda p, x: lax.scan(lambda c, _: (upd(c, x), None), p, length=L)[0]),
  "scan unroll": jax.jit(lambda p, x: lax.scan(lambda c, _: (upd(c, x), None), p, length=L, unroll=True)[0]),
  "fori": jax.jit(lambda p, x: lax.fori_loop(0, L, lambda i, c: upd(c, x), p)),
}
for name, f in variants.items():
  if name != "plain x4":
    t = f.lower(params, x).compile().as_text()
    print(name, sorted(set(m.group(1) for m in re.finditer(r"dim_labels=(\S+?)[,}]", t))))
  jax.block_until_ready(f(params, x))
times = {k: [] for k in variants}
for r in range(5):
  for k, f in variants.items():
    t0 = time.perf_counter(); jax.block_until_ready(f(params, x)); times[k].append((time.perf_counter() - t0) / L)
for k, v in times.items(): print(f"{k:20s} {1e3*statistics.median(v):8.1f} ms/step")
