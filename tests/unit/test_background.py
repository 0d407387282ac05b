"""The numpy mesh background (psfmatch.background)."""

import numpy as np
import pytest
from astropy.stats import sigma_clip

from psfmatch.background import clipped_cell_means, mesh_background


def test_cell_means_equal_astropy_sigma_clip_then_mean():
    """Each cell's value is astropy's sigma_clip (3σ about the median, 3 iterations), then the mean."""
    rng = np.random.default_rng(11)
    box = 16
    image = rng.normal(50.0, 3.0, (3 * box, 4 * box))
    image[rng.random(image.shape) < 0.03] += rng.uniform(20, 500)  # outliers to clip
    bad = rng.random(image.shape) < 0.05  # well under the 10 % that drops a cell
    mesh = clipped_cell_means(image, bad, box)
    for j in range(3):
        for i in range(4):
            cell = image[j * box:(j + 1) * box, i * box:(i + 1) * box]
            used = cell[~bad[j * box:(j + 1) * box, i * box:(i + 1) * box]]
            expected = sigma_clip(used, sigma=3.0, maxiters=3, cenfunc="median",
                                  stdfunc="std").compressed().mean()
            # the same pixels kept: equal up to summation order (1e-12 relative)
            assert mesh[j, i] == pytest.approx(expected, rel=1e-12)


def test_recovers_a_sloped_sky_under_noise_and_stars():
    rng = np.random.default_rng(3)
    ny, nx, sigma, box = 512, 640, 5.0, 32
    yy, xx = np.mgrid[:ny, :nx]
    sky = 100.0 + 4.0 * xx / nx + 2.0 * yy / ny  # bilinear interpolation reproduces it
    image = sky + rng.normal(0.0, sigma, sky.shape)
    for y, x in rng.integers(4, [ny - 4, nx - 4], size=(150, 2)):
        image[y - 2:y + 3, x - 2:x + 3] += rng.uniform(100, 3000)
    bad = np.zeros(sky.shape, bool)
    bad[200:260, 300:380] = True  # a masked region: its cells are filled from neighbours
    background = mesh_background(image.astype(np.float32), bad, box)
    assert background.shape == sky.shape and background.dtype == np.float64
    # one cell's clipped mean has a noise of sigma/box (box² pixels); the interpolated
    # background averages such cells, so its rms error stays below that one-cell noise
    # (0.076 here against 0.156; photutils' Background2D on the same pixels: 0.091)
    error = np.sqrt(np.mean((background - sky)[~bad] ** 2))
    assert error < sigma / box


def test_constant_image_and_image_without_usable_cells():
    image = np.full((100, 70), 7.25, dtype=np.float32)
    bad = np.zeros(image.shape, bool)
    assert np.array_equal(mesh_background(image, bad, 32), np.full(image.shape, 7.25))
    # every cell more than 10 % masked: the median of the usable pixels
    bad[:, ::2] = True
    image[:, 1::2] = 3.0
    assert mesh_background(image, bad, 32) == 3.0
    assert mesh_background(image, np.ones(image.shape, bool), 32) == 0.0


def test_input_is_not_modified():
    rng = np.random.default_rng(5)
    image = rng.normal(10.0, 1.0, (64, 64)).astype(np.float32)
    bad = rng.random(image.shape) < 0.02
    before, bad_before = image.copy(), bad.copy()
    mesh_background(image, bad, 16)
    assert np.array_equal(image, before) and np.array_equal(bad, bad_before)
