"""The benchmark's yardstick computes the same loss as ae_jax, however each writes it."""

import jax
import numpy as np
import pytest

from ae_jax.losses import reconstruction
from benchmarks import plain_loop


@pytest.mark.parametrize("kind", reconstruction.KINDS)
def test_user_reconstruction_equals_ae_jax_terms(kind):
  logits = jax.random.normal(jax.random.key(0), (3, 4, 4, 1)) * 3
  x = jax.random.uniform(jax.random.key(1), (3, 4, 4, 1))
  np.testing.assert_allclose(plain_loop.user_reconstruction(logits, x, kind=kind),
                             reconstruction.from_logits(logits, x, kind=kind), rtol=1e-5)


def test_make_loss_rejects_unknown_losses():
  with pytest.raises(ValueError, match="losses='mine'"):
    plain_loop.make_loss(None, None, losses="mine")
