"""On-device augmentation: the per-sample Gaussian blur against a NumPy/SciPy reference."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from fetal_ssl_jax.train.augment import _gaussian_blur


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_blur_equals_separable_zero_padded_reference(sigma):
    img = np.random.default_rng(0).random((13, 17, 1)).astype(np.float32)
    t = np.arange(-4, 5)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    ref = ndimage.correlate1d(img[..., 0].astype(np.float64), k, axis=0, mode="constant")
    ref = ndimage.correlate1d(ref, k, axis=1, mode="constant")
    out = np.asarray(_gaussian_blur(jnp.asarray(img), jnp.float32(sigma)))
    np.testing.assert_allclose(out[..., 0], ref, atol=2e-6)


def test_blur_per_sample_sigma_under_vmap():
    imgs = jnp.asarray(np.random.default_rng(1).random((3, 9, 9, 1)).astype(np.float32))
    sig = jnp.asarray([0.2, 1.0, 2.0], jnp.float32)
    batched = jax.jit(jax.vmap(_gaussian_blur))(imgs, sig)
    for i in range(3):
        np.testing.assert_allclose(batched[i], _gaussian_blur(imgs[i], sig[i]), atol=1e-6)
    # more blur, less variance: the samples really got different kernels
    assert float(batched[0].std()) > float(batched[1].std()) > float(batched[2].std())
