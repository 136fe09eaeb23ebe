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


def test_rotated_resized_crop_is_rotate_then_crop_in_one_resampling():
    """Same random draws, same geometry as maybe_rotate + random_resized_crop (what the pipeline did before):
    on a smooth, asymmetric image the two differ by about one grey level (one bilinear interpolation instead
    of two), while the wrong rotation sense would differ by tens."""
    from fetal_ssl_jax.data import host_augment as H
    yy, xx = np.mgrid[0:96, 0:80].astype(np.float64)
    img = (127 + 100 * np.sin(xx / 11.0 + 0.3) * np.cos(yy / 17.0) * (xx / 80.0)).clip(0, 255).astype(np.uint8)
    for seed in range(20):
        ra, rb = np.random.default_rng(seed), np.random.default_rng(seed)
        two = H.random_resized_crop(H.maybe_rotate(img, ra, 150.0), 48, ra, (0.3, 1.0), (0.75, 1.33))
        one = H.rotated_resized_crop(img, 48, rb, 150.0, (0.3, 1.0), (0.75, 1.33))
        assert ra.random() == rb.random()  # the same draws: the rest of the pipeline's stream is unchanged
        inside = two > 0  # the filled corners' edges are interpolated differently
        assert np.abs(one.astype(float) - two)[inside].mean() < 3.0, seed
        rc = np.random.default_rng(seed)
        flipped = H.random_resized_crop(np.asarray(H.Image.fromarray(img).rotate(-rc.uniform(-150.0, 150.0),
                                                                                resample=H.Image.BILINEAR)), 48, rc,
                                        (0.3, 1.0), (0.75, 1.33))
        if abs(np.random.default_rng(seed).uniform(-150.0, 150.0)) > 20:
            assert np.abs(flipped.astype(float) - two)[inside].mean() > 10.0, seed
    r = np.random.default_rng(3)
    np.testing.assert_array_equal(H.rotated_resized_crop(img, 48, r, 0.0),
                                  H.random_resized_crop(img, 48, np.random.default_rng(3)))
