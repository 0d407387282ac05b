"""Band-by-band passes over an image give what their whole-image definitions give.

Each test writes the definition the straightforward way (whole float64 arrays, numpy's
own percentile/median) and checks the band-by-band function against it, exactly (or,
for significances computed by band-sized float64 transforms, the same thresholded
pixels). The image has more rows than a band so that band edges and halos are crossed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import maximum_filter

import psfmatch.scale_variance as sv
from psfmatch.convolution import correlate
from psfmatch.modes import bright_peaks, template_coverage
from psfmatch.synth import SimulationParams, make_pair


@pytest.fixture(scope="module")
def exposure():
    p = make_pair(SimulationParams(shape=(600, 90), seed=2, star_density=6000.0, xy0=(3, 5),
                                   bad_column=50))
    mask = p.science.mask.copy()
    mask[100:110, 20] |= np.int32(1 << p.science.mask_planes["BAD"])
    image = p.science.image.copy()
    image[300, 40] = np.nan
    return p.science.with_(mask=mask, image=image)


def test_bright_peaks_are_the_whole_image_maxima(exposure):
    bad = ~np.isfinite(exposure.image) | ~np.isfinite(exposure.variance) \
        | ~(exposure.variance > 0) | ((exposure.mask & exposure.plane_bitmask(
            ("NO_DATA", "EDGE", "SAT", "BAD", "CR"))) != 0)
    image = exposure.image.astype(np.float64)
    level = float(np.median(image[~bad]))
    with np.errstate(invalid="ignore"):
        snr = np.where(bad, -np.inf, (image - level) / np.sqrt(exposure.variance))
    peak = (snr == maximum_filter(snr, size=5)) & (snr >= 20.0)
    rows, cols = np.nonzero(peak)
    order = np.argsort(-snr[rows, cols], kind="stable")[:200]
    x, y = bright_peaks(exposure)
    assert np.array_equal(x, cols[order] + 3.0)
    assert np.array_equal(y, rows[order] + 5.0)
    assert x.size >= 5
    assert np.ptp(y) > 256  # peaks in more than one band


def test_template_coverage_is_the_mean_of_the_joint_map(exposure):
    shifted = exposure.with_(xy0=(13, -95))  # overlap: part of the rows and columns
    s_good = np.isfinite(exposure.image) & ~exposure.plane("NO_DATA")
    t_good = np.zeros(exposure.shape, dtype=bool)
    t_good[: 600 - 100, : 90 - 10] = (np.isfinite(shifted.image)
                                      & ~shifted.plane("NO_DATA"))[100:, 10:]
    assert template_coverage(shifted, exposure) == float(np.mean(s_good & t_good))


def test_detected_marks_and_the_variance_factor_match_the_whole_image_pass(exposure,
                                                                           monkeypatch):
    monkeypatch.setattr(sv, "_BAND", 64)
    background = sv.background_image(exposure)
    marked, n = sv.mark_detected(exposure, psf_fwhm=4.5, background=background)
    # whole image: correlations of the full arrays, grown once
    sigma = 4.5 / 2.3548200450309493
    half = max(1, math.ceil(4.0 * sigma))
    g1 = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    gauss = np.outer(g1, g1) / np.outer(g1, g1).sum()
    bad = sv._bad_rows(exposure, slice(None), exposure.plane_bitmask(("NO_DATA", "BAD", "SAT")))
    residual = np.where(bad, 0.0, exposure.image.astype(np.float64) - background)
    with np.errstate(invalid="ignore", divide="ignore"):
        nu = correlate(residual, gauss) / np.sqrt(correlate(
            np.where(bad, 0.0, exposure.variance.astype(np.float64)), gauss**2))
    detected = maximum_filter(np.nan_to_num(nu, nan=0.0) > 5.0,
                              size=2 * math.ceil(2.4 * sigma) + 1)
    assert np.array_equal(marked.plane("DETECTED"), detected)
    assert n == int(detected.sum()) > 0
    factor = sv.variance_scale_factor(marked, background=background)
    planes = marked.plane_bitmask(sv.MASK_PLANES)
    good = ~sv._bad_rows(marked, slice(None), planes)
    z = (marked.image.astype(np.float64) - background)[good] \
        / np.sqrt(marked.variance.astype(np.float64)[good])
    q1, q3 = np.percentile(z, [25.0, 75.0])
    assert factor.factor == float((0.74 * (q3 - q1)) ** 2)
    assert factor.n_pixels == int(good.sum())
