# Run at commit ccd754b (before the conv changes; models.build then used flax nn.ConvTranspose):
#   PYTHONPATH=. python docs/conv_speed/micro.py 128
import time, functools, statistics, sys
import jax, jax.numpy as jnp, optax
import flax.linen as nn
from ae_jax import models
from ae_jax.losses import reconstruction

B = int(sys.argv[1]) if len(sys.argv) > 1 else 128
x = jax.random.uniform(jax.random.key(0), (B, 28, 28, 1))
model = models.build(architecture="conv", input_shape=(28, 28, 1), latent_dim=20, widths=(32, 64))
params = models.init(model, jax.random.key(1), (28, 28, 1))
print(jax.tree.map(lambda a: a.shape, params))

def loss(p, x):
  z, logits = model.apply({"params": p}, x)
  return reconstruction.from_logits(logits, x, kind="bernoulli").mean()

fwd = jax.jit(loss)
grad = jax.jit(jax.grad(loss))
enc = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode"))
z = enc(params, x)
dec = jax.jit(lambda p, z: model.apply({"params": p}, z, method="decode"))
encg = jax.jit(jax.grad(lambda p, x: model.apply({"params": p}, x, method="encode").sum()))
decg = jax.jit(jax.grad(lambda p, z: model.apply({"params": p}, z, method="decode").sum()))

# individual layers
h1 = jnp.ones((B, 7, 7, 64)); h2 = jnp.ones((B, 14, 14, 64)); h3 = jnp.ones((B, 28, 28, 32))
def layer(mod, h):
  p = mod.init(jax.random.key(0), h)
  f = jax.jit(lambda p, h: mod.apply(p, h))
  g = jax.jit(jax.grad(lambda p, h: mod.apply(p, h).sum(), argnums=(0, 1)))
  return (lambda: f(p, h)), (lambda: g(p, h))
cases = {
  "full_fwd": lambda: fwd(params, x),
  "full_grad": lambda: grad(params, x),
  "enc_fwd": lambda: enc(params, x),
  "enc_grad": lambda: encg(params, x),
  "dec_fwd": lambda: dec(params, z),
  "dec_grad": lambda: decg(params, z),
}
for name, mod, h in [("deconv0 7->14 64->64", nn.ConvTranspose(64, (3, 3), (2, 2), "SAME"), h1),
                     ("deconv1 14->28 64->32", nn.ConvTranspose(32, (3, 3), (2, 2), "SAME"), h2),
                     ("logits 28 32->1", nn.Conv(1, (3, 3), padding="SAME"), h3),
                     ("conv0 28->14 1->32", nn.Conv(32, (3, 3), (2, 2), "SAME"), jnp.ones((B, 28, 28, 1))),
                     ("conv1 14->7 32->64", nn.Conv(64, (3, 3), (2, 2), "SAME"), jnp.ones((B, 14, 14, 32)))]:
  f, g = layer(mod, h)
  cases[name + " fwd"] = f; cases[name + " grad"] = g
times = {k: [] for k in cases}
for k, f in cases.items():
  jax.block_until_ready(f())
for r in range(5):
  for k, f in cases.items():
    t = time.perf_counter(); jax.block_until_ready(f()); times[k].append(time.perf_counter() - t)
for k, v in times.items():
  print(f"{k:30s} {1e3*statistics.median(v):9.2f} ms")
