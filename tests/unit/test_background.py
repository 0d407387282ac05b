"""The numpy mesh background (psfmatch.background)."""

import warnings

import numpy as np
import pytest
from astropy.stats import sigma_clip
from astropy.utils.exceptions import AstropyUserWarning

from psfmatch.background import clipped_cell_means, mesh_background


def _astropy_cell_means(image, bad, box, sigma, maxiters):
    """astropy's sigma_clip along the cell axis (as photutils calls it), then the mean."""
    ny, nx = image.shape
    cells = np.where(bad, np.nan, image).reshape(ny // box, box, nx // box, box)
    cells = cells.transpose(0, 2, 1, 3).reshape(ny // box, nx // box, box * box)
    with warnings.catch_warnings():  # the NaN of bad pixels are meant (photutils does so)
        warnings.simplefilter("ignore", AstropyUserWarning)
        clipped = sigma_clip(cells, sigma=sigma, maxiters=maxiters, cenfunc="median",
                             stdfunc="std", axis=2, masked=False)
    return np.nanmean(clipped, axis=2)


@pytest.mark.parametrize(("sigma", "maxiters"), [(3.0, 3), (1.0222, 8), (2.0, 10)])
def test_cell_means_equal_astropy_sigma_clip_then_mean(sigma, maxiters):
    """Each cell's value is astropy's sigma_clip about the median, then the mean."""
    rng = np.random.default_rng(11)
    box = 16
    image = rng.normal(50.0, 3.0, (3 * box, 4 * box))
    image[rng.random(image.shape) < 0.03] += rng.uniform(20, 500)  # outliers to clip
    bad = rng.random(image.shape) < 0.05  # well under the 10 % that drops a cell
    mesh = clipped_cell_means(image, bad, box, sigma=sigma, maxiters=maxiters)
    expected = _astropy_cell_means(image, bad, box, sigma, maxiters)
    # the same pixels kept: equal up to summation order (1e-12 relative)
    np.testing.assert_allclose(mesh, expected, rtol=1e-12)


def test_unflagged_non_finite_pixels_are_left_out():
    image = np.arange(16.0).reshape(4, 4)
    for value in (-np.inf, np.inf, np.nan):
        holed = image.copy()
        holed[0, 0] = value
        mesh = clipped_cell_means(holed, np.zeros(image.shape, bool), 4, max_bad_fraction=0.5)
        assert mesh[0, 0] == pytest.approx(np.arange(1.0, 16.0).mean(), rel=1e-12)
    # a cell with no usable pixel has no estimate, whatever fraction is allowed
    empty = clipped_cell_means(np.full((4, 4), np.nan), np.zeros((4, 4), bool), 4,
                               max_bad_fraction=1.0)
    assert np.isnan(empty[0, 0])


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
