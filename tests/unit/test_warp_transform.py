"""Tests of psfmatch.warp_transform: the Lanczos warp driven by a pixel transform.

The reference is :func:`psfmatch.warp.warp_exposure` itself: on a simulated pair whose
WCSs encode an exact rotation + shift (same tangent point, see
:func:`psfmatch.synth.make_pair`), warping through the WCSs and through the equivalent
affine pixel transform must give the same image, variance and mask.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from psfmatch.exposure import Exposure
from psfmatch.register import AffineTransform, register_exposures
from psfmatch.synth import SimulationParams, make_pair
from psfmatch.warp import WarpError, warp_exposure
from psfmatch.warp_transform import warp_exposure_pixels


@pytest.fixture(scope="module")
def pair_and_truth():
    offset = (-22.4, 48.7, 0.3)
    xy0 = (37, 15)
    pair = make_pair(SimulationParams(shape=(256, 320), template_offset=offset, seed=2,
                                      xy0=xy0))
    ny, nx = pair.science.shape
    centre = np.array([xy0[0] + (nx - 1) / 2.0, xy0[1] + (ny - 1) / 2.0])
    t = math.radians(offset[2])
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return pair, AffineTransform(rot, centre + np.asarray(offset[:2]) - rot @ centre)


def test_pixel_transform_reproduces_the_wcs_warp(pair_and_truth):
    pair, truth = pair_and_truth
    sci = pair.science
    by_wcs, info_wcs = warp_exposure(pair.template, wcs=sci.wcs, shape=sci.shape, xy0=sci.xy0)
    by_pix, info_pix = warp_exposure_pixels(pair.template.with_(wcs=None), truth,
                                            shape=sci.shape, xy0=sci.xy0, wcs=sci.wcs)
    # Same kernels, same taps: only the float64 positions differ (sky round trip vs
    # affine), by ~1e-9 px, i.e. float32 rounding of the sums.
    np.testing.assert_array_equal(by_pix.mask, by_wcs.mask)
    np.testing.assert_array_equal(np.isfinite(by_pix.image), np.isfinite(by_wcs.image))
    good = np.isfinite(by_wcs.image)
    assert 0.5 < good.mean() < 1.0  # partial overlap: NO_DATA border
    np.testing.assert_allclose(by_pix.image[good], by_wcs.image[good], rtol=0,
                               atol=1e-6 * float(np.abs(by_wcs.image[good]).max()))
    np.testing.assert_allclose(by_pix.variance[good], by_wcs.variance[good], rtol=1e-5)
    assert by_pix.mask_planes == by_wcs.mask_planes
    assert by_pix.xy0 == sci.xy0
    assert by_pix.wcs is sci.wcs
    assert info_pix["mapping"] == "pixel"
    for key in ("resampled", "integer_offset", "coverage_fraction"):
        assert info_pix[key] == info_wcs[key]
    assert info_pix["relative_area_min"] == pytest.approx(1.0, abs=1e-9)


def test_integer_translation_is_copied(pair_and_truth):
    pair, _ = pair_and_truth
    template = pair.template.with_(wcs=None)
    x0, y0 = template.xy0

    def shift(x, y):  # science parent -> template parent, 3 columns right, 2 rows down
        return x + 3.0, y - 2.0

    warped, info = warp_exposure_pixels(template, shift, shape=(100, 120), xy0=(x0 + 10, y0 + 20))
    assert not info["resampled"]
    assert info["integer_offset"] == [13, 18]  # array offset template - science
    np.testing.assert_array_equal(warped.image, template.image[18:118, 13:133])
    np.testing.assert_array_equal(warped.variance, template.variance[18:118, 13:133])
    np.testing.assert_array_equal(warped.mask, template.mask[18:118, 13:133])


def test_no_overlap_names_both_extents(pair_and_truth):
    pair, _ = pair_and_truth
    far = AffineTransform(np.eye(2), [5000.0, 0.0])
    with pytest.raises(WarpError, match=r"do not overlap: science corners map to template "
                                        r"parent x \[5037\.0, 5356\.0\]"):
        warp_exposure_pixels(pair.template, far, shape=pair.science.shape,
                             xy0=pair.science.xy0)
    with pytest.raises(WarpError, match="mapping must be callable"):
        warp_exposure_pixels(pair.template, "identity", shape=(4, 4))


def test_registered_rotated_image_warps_back_to_itself(pair_and_truth):
    # Register an image against its numpy.rot90 copy, then warp the copy back: every
    # science pixel centre lands (to ~1e-8 px, the fit's rounding) on a template pixel
    # centre, so Lanczos copies it up to off-centre tap weights of ~1e-8 (times pixel
    # values up to 1e5 in the bad column), where the 6x6 footprint is inside.
    pair, _ = pair_and_truth
    sci = pair.science.with_(wcs=None, xy0=(0, 0))
    rotated = Exposure(image=np.rot90(sci.image).copy(), mask=np.rot90(sci.mask).copy(),
                       variance=np.rot90(sci.variance).copy(), mask_planes=sci.mask_planes)
    found = register_exposures(sci, rotated)
    back, info = warp_exposure_pixels(rotated, found, shape=sci.shape)
    assert info["resampled"]
    inner = np.s_[3:-3, 3:-3]
    peak = float(np.abs(sci.image).max())
    np.testing.assert_allclose(back.image[inner], sci.image[inner], rtol=1e-5,
                               atol=1e-7 * peak)
    np.testing.assert_allclose(back.variance[inner], sci.variance[inner], rtol=1e-5)
    # the bilinear mask footprint includes the neighbour whose weight is ~1e-8, not 0:
    # every bit is kept, and may spread to the adjacent pixels (as afw does)
    got, want = back.mask[inner], sci.mask[inner]
    np.testing.assert_array_equal(got & want, want)
    grown = ndimage.binary_dilation(sci.mask != 0, np.ones((3, 3), bool))[inner]
    assert not np.any((got != want) & ~grown)
