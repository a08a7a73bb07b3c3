# Kernel vs input gradient of flax nn.ConvTranspose 14x14x64 -> 28x28x32, batch 128.
import time, statistics
import jax, jax.numpy as jnp
import flax.linen as nn
B=128
h = jax.random.normal(jax.random.key(0), (B, 14, 14, 64))
mod = nn.ConvTranspose(32, (3, 3), (2, 2), "SAME")
p = mod.init(jax.random.key(0), h)
gk = jax.jit(jax.grad(lambda p, h: mod.apply(p, h).sum(), argnums=0))
gx = jax.jit(jax.grad(lambda p, h: mod.apply(p, h).sum(), argnums=1))
cases = {"grad_kernel": lambda: gk(p, h), "grad_input": lambda: gx(p, h)}
for f in cases.values(): jax.block_until_ready(f())
times = {k: [] for k in cases}
for r in range(5):
  for k, f in cases.items():
    t = time.perf_counter(); jax.block_until_ready(f()); times[k].append(time.perf_counter() - t)
for k, v in times.items(): print(f"{k:30s} {1e3*statistics.median(v):9.2f} ms")
print(jax.jit(jax.grad(lambda p, h: mod.apply(p, h).sum(), argnums=0)).lower(p, h).as_text()[-3000:])
