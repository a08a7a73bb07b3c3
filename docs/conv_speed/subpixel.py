# Layer-level: flax nn.ConvTranspose vs one 2x2 sub-pixel conv vs four phase convs (fwd, grad).
#   PYTHONPATH=. python docs/conv_speed/subpixel.py 128
import time, statistics, sys
import numpy as np
import jax, jax.numpy as jnp
from jax import lax
import flax.linen as nn

DN = ("NHWC", "HWIO", "NHWC")
# T[a][phase]: the 3-tap index (3 = a zero tap) that window offset a (0: x[m-1], 1: x[m]) feeds
# into output phase (0: y[2m], 1: y[2m+1]).
T = np.array([[0, 3], [2, 1]])

def subpixel_kernel(kernel):
  kp = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  k = kp[T[:, :, None, None], T[None, None, :, :]]  # (a, ph, b, pw, cin, cout)
  cin, cout = kernel.shape[2:]
  return k.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, cin, 4 * cout)

def deconv_subpixel(x, kernel, bias):
  b, h, w, _ = x.shape
  cout = kernel.shape[-1]
  y = lax.conv_general_dilated(x, subpixel_kernel(kernel), (1, 1), ((1, 0), (1, 0)), dimension_numbers=DN)
  y = y.reshape(b, h, w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, cout)
  return y + bias

def deconv_phases(x, kernel, bias):
  b, h, w, _ = x.shape
  cout = kernel.shape[-1]
  conv = lambda k, pad: lax.conv_general_dilated(x, k, (1, 1), pad, dimension_numbers=DN)
  ee = conv(kernel[0::2, 0::2], ((1, 0), (1, 0)))  # taps (0,2) x (0,2)
  eo = conv(kernel[0::2, 1:2], ((1, 0), (0, 0)))
  oe = conv(kernel[1:2, 0::2], ((0, 0), (1, 0)))
  oo = conv(kernel[1:2, 1:2], ((0, 0), (0, 0)))
  y = jnp.stack([jnp.stack([ee, eo], 3), jnp.stack([oe, oo], 3)], 2)  # (b, h, 2, w, 2, c)
  return y.reshape(b, 2 * h, 2 * w, cout) + bias

def deconv_flax(x, kernel, bias):
  return nn.ConvTranspose(kernel.shape[-1], (3, 3), (2, 2), "SAME").apply({"params": {"kernel": kernel, "bias": bias}}, x)

if __name__ == "__main__":
  B = int(sys.argv[1]) if len(sys.argv) > 1 else 128
  for (n, cin, cout) in [(7, 64, 64), (14, 64, 32)]:
    x = jax.random.normal(jax.random.key(0), (B, n, n, cin))
    k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) / 20
    bb = jax.random.normal(jax.random.key(2), (cout,))
    ref = deconv_flax(x, k, bb)
    for f in (deconv_subpixel, deconv_phases):
      np.testing.assert_allclose(f(x, k, bb), ref, rtol=1e-4, atol=1e-4)
      gr = jax.grad(lambda k, x: (deconv_flax(x, k, bb) ** 2).sum(), (0, 1))(k, x)
      g = jax.grad(lambda k, x: (f(x, k, bb) ** 2).sum(), (0, 1))(k, x)
      for a, r in zip(g, gr): np.testing.assert_allclose(a, r, rtol=1e-3, atol=1e-2)
    cases = {}
    for name, f in [("flax", deconv_flax), ("subpixel", deconv_subpixel), ("phases", deconv_phases)]:
      fwd = jax.jit(f)
      grd = jax.jit(jax.grad(lambda k, x, bb, f=f: (f(x, k, bb) ** 2).sum(), (0, 1, 2)))
      cases[f"{name} fwd"] = (lambda fwd=fwd: fwd(x, k, bb))
      cases[f"{name} grad"] = (lambda grd=grd: grd(k, x, bb))
    for f in cases.values(): jax.block_until_ready(f())
    times = {c: [] for c in cases}
    for r in range(5):
      for c, f in cases.items():
        t = time.perf_counter(); jax.block_until_ready(f()); times[c].append(time.perf_counter() - t)
    print(f"B={B} {n}x{n}x{cin} -> {2*n}x{2*n}x{cout}")
    for c, v in times.items(): print(f"  {c:20s} {1e3*statistics.median(v):9.2f} ms")
