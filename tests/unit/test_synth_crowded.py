"""The crowded simulator (synth_crowded): kernel model, profiles, unmasked saturation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psfmatch.synth.crowded import CrowdedParams, make_crowded_pair, moffat_alpha, render_moffats


def test_moffat_profile_is_normalised_and_has_the_fwhm():
    img = np.zeros((201, 201))
    render_moffats(img, 100.0, 100.0, 1000.0, 5.0, 3.0)
    # truncated where the profile falls below 1e-4 ADU: the missing flux is
    # (1 + r²/α²)^(1-β) at the cut, < 0.1 % for this flux
    assert img.sum() == pytest.approx(1000.0, rel=1e-3)
    alpha = moffat_alpha(5.0, 3.0)
    peak = 1000.0 * 2.0 / (math.pi * alpha**2)
    assert img[100, 100] == pytest.approx(peak)
    # FWHM 5 px: half maximum between 2 and 3 px from the centre
    assert img[100, 102] > 0.5 * peak > img[100, 103]


@pytest.fixture(scope="module")
def pair():
    return make_crowded_pair(CrowdedParams(shape=(160, 160), star_density=30000.0, seed=2,
                                           n_transients=0))


def test_kernel_sum_and_anchors(pair):
    k = pair.kernel
    for x, y in ((0, 0), (80, 40), (159, 159), (30, 140)):
        assert k.kernel_at(x, y).sum() == pytest.approx(pair.params.photometric_scale, rel=1e-12)
    # at an anchor node the kernel is that anchor's basis image
    np.testing.assert_allclose(k.kernel_at(0.0, 0.0), k.basis[0], atol=1e-15)
    np.testing.assert_allclose(k.kernel_at(159.0, 159.0), k.basis[8], atol=1e-15)
    # the anchors differ (width, ellipticity, sub-pixel centre): the kernel varies
    assert np.abs(k.basis[0] - k.basis[8]).sum() > 0.05 * pair.params.photometric_scale


def test_saturation_is_clipped_but_not_masked(pair):
    for exposure in (pair.template, pair.science):
        clipped = exposure.image >= pair.params.saturation
        assert clipped.any()  # bright stars reach the clip level in both images ...
        assert not exposure.mask.any()  # ... and nothing says so
    assert pair.saturated.any()


def test_gaussian_profile_option():
    from psfmatch.synth.crowded import render_stars

    img = np.zeros((101, 101))
    render_stars(img, 50.0, 50.0, 1000.0, 4.0, profile="gaussian", beta=2.5)
    sigma = 4.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    off = np.arange(101) - 50.0
    gauss = 1000.0 * np.outer(np.exp(-0.5 * (off / sigma) ** 2),
                              np.exp(-0.5 * (off / sigma) ** 2)) / (2 * math.pi * sigma**2)
    # the β → ∞ Moffat: within one FWHM of the centre ≲ 0.2 % of a Gaussian's value
    core = np.hypot(*np.meshgrid(off, off)) <= 4.0
    np.testing.assert_allclose(img[core], gauss[core], rtol=2e-3)
    with pytest.raises(ValueError, match="psf_profile"):
        CrowdedParams(psf_profile="airy")
    flat = make_crowded_pair(CrowdedParams(shape=(96, 96), star_density=30000.0, seed=5,
                                           n_transients=0, psf_profile="gaussian",
                                           mask_saturation=True))
    sat = flat.template.plane("SAT")
    # the mask switch flags exactly the clipped pixels (14 of them with this seed)
    assert sat.any()
    np.testing.assert_array_equal(sat, flat.template.image >= flat.params.saturation)
