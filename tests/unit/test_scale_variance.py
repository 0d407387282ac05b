"""Variance-plane rescaling (ScaleVarianceTask behaviour) on simulated images.

A 512² sky-dominated image (σ² = 216 ADU²) with stars; the variance plane is divided by
1.345 (as ip_diffim's test does), so the pixel-based factor must come back as 1.345. The
IQR estimate of σ from N ≈ 2.5e5 pixels has a relative error ~1.1/√N ≈ 0.2 %, 0.4 % on
σ²; stars inside the quartiles bias it upward by well under 1 %. Tolerance 2 %.
"""

from __future__ import annotations

import numpy as np
import pytest
from tests import modes_sim

from psfmatch.errors import VarianceScaleError
from psfmatch.exposure import Exposure
from psfmatch.scale_variance import scale_variance, variance_scale_factor


@pytest.fixture(scope="module")
def science():
    return modes_sim.make(modes_sim.params(background=(50.0, 20.0, -15.0)), swapped=False).science


def test_factor_of_a_correct_variance_plane_is_one(science):
    scale = variance_scale_factor(science)
    assert scale.method == "pixel"
    assert scale.n_pixels > 200_000
    assert scale.factor == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("true_factor", [1.345, 0.5, 4.0])
def test_recovers_a_wrong_variance_scale(science, true_factor):
    wrong = science.with_(variance=science.variance / true_factor)
    rescaled, scale = scale_variance(wrong)
    assert scale.factor == pytest.approx(true_factor, rel=0.02)
    np.testing.assert_allclose(rescaled.variance, wrong.variance * scale.factor, rtol=1e-6)
    np.testing.assert_array_equal(rescaled.image, science.image)
    np.testing.assert_array_equal(rescaled.mask, science.mask)


def test_image_based_estimate_when_the_pixel_based_one_exceeds_the_limit(science):
    # every other row claims 1e-4 of its variance: half the S/N values are 100x too wide,
    # so the S/N quartiles (pixel based) blow up; the median variance is the mean of the
    # two middle values, about half the smallest sky variance (216 + background), so the
    # image-based factor is the pixel variance over that: between 2 and 2.5 here
    var = science.variance.copy()
    var[::2] *= 1.0e-4
    scale = variance_scale_factor(science.with_(variance=var), limit=10.0)
    assert scale.method == "image"
    middle = 0.5 * float(np.min(science.variance))
    assert scale.factor == pytest.approx(float(np.median(science.variance)) / middle, rel=0.1)


def test_too_wrong_a_variance_raises_naming_the_image(science):
    with pytest.raises(VarianceScaleError, match=r"pair 'x' template.*limit 10"):
        variance_scale_factor(science.with_(variance=science.variance / 100.0),
                              label="pair 'x' template")


def test_fewer_than_two_good_pixels_gives_one():
    exp = Exposure(np.zeros((4, 4), np.float32), np.ones((4, 4), np.int32),
                   np.ones((4, 4), np.float32))  # every pixel BAD
    scale = variance_scale_factor(exp)
    assert (scale.factor, scale.method, scale.n_pixels) == (1.0, "none", 0)
