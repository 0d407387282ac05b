"""DIA flags from mask planes, peak rejection, streaks, dipoles and the bad-subtraction gate."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
from tests.dia_support import true_difference

from psfmatch.dia import (
    BadSubtractionError,
    DiaOptions,
    decode_flags,
    detect_and_measure,
    gaussian_psf_image,
)
from psfmatch.dia.flags import FLAG_BITS
from psfmatch.exposure import Exposure
from psfmatch.synth import SimulationParams, make_pair, render_gaussians

FWHM = 4.0
SIGMA = FWHM / 2.3548
# white noise of unit variance: a PSF flux has sigma_F = sqrt(4 pi s^2) = 6.0 ADU
SIGMA_F = math.sqrt(4.0 * math.pi * SIGMA**2)


def _noise(shape=(256, 256), seed=0):
    rng = np.random.default_rng(seed)
    exp = Exposure(image=rng.normal(0.0, 1.0, shape).astype(np.float32),
                   mask=np.zeros(shape, np.int32), variance=np.ones(shape, np.float32))
    return exp.with_planes(["SAT_TEMPLATE"])


def _add(exp, x, y, flux):
    image = exp.image.astype(np.float64)
    render_gaussians(image, x, y, flux, SIGMA, xy0=exp.xy0)
    return exp.with_(image=image.astype(np.float32))


def _set(exp, plane, rows, cols):
    mask = exp.mask.copy()
    mask[rows, cols] |= 1 << exp.mask_planes[plane]
    return exp.with_(mask=mask)


def _nearest(cat, x, y):
    d = np.hypot(cat.columns["x"] - x, cat.columns["y"] - y)
    return int(d.argmin()), float(d.min())


def test_mask_planes_become_flags_and_peaks_on_rejected_planes_are_dropped():
    exp = _noise()
    # 60 sigma_F sources: far above threshold, footprints ~ +-8 px
    sources = {"clean": (40, 40), "intrp": (120, 40), "suspect": (200, 40),
               "edge": (40, 250), "cr": (120, 200), "bad": (200, 200)}
    for x, y in sources.values():
        exp = _add(exp, x + 0.2, y - 0.3, 60 * SIGMA_F)
    exp = _set(exp, "INTRP", 40 + 3, 120)            # inside the footprint, off the peak
    exp = _set(exp, "SUSPECT", 40, 200 - 4)
    exp = _set(exp, "EDGE", slice(252, 256), slice(None))  # the border rows
    exp = _set(exp, "CR", 200, 120)                   # on the peak pixel
    exp = _set(exp, "BAD", slice(195, 206), 200)      # a bad column through the peak
    cat = detect_and_measure(exp, gaussian_psf_image(FWHM))
    assert cat.metadata["rejected"]["CR"] == 1
    assert cat.metadata["rejected"]["BAD"] == 1
    assert cat.metadata["rejected"]["total"] == 2
    expected = {"clean": [], "intrp": ["INTRP"], "suspect": ["SUSPECT"], "edge": ["EDGE"]}
    for name, flags in expected.items():
        i, d = _nearest(cat, *sources[name])
        assert d < 0.7, name
        assert [f for f in decode_flags(cat.columns["flags"][i])
                if FLAG_BITS[f] < 16] == flags, name
    for name in ("cr", "bad"):
        assert _nearest(cat, *sources[name])[1] > 5, name
    # a plane not listed in flag_planes is not turned into a flag
    only_sat = detect_and_measure(exp, gaussian_psf_image(FWHM),
                                  options=DiaOptions(flag_planes=("SAT",)))
    i, _ = _nearest(only_sat, *sources["intrp"])
    assert not only_sat.columns["flags"][i] & (1 << FLAG_BITS["INTRP"])


def test_streak_is_flagged_and_point_sources_are_not():
    exp = _noise(seed=1)
    # a 40-px trail at 30 deg: 400 Gaussians 0.1 px apart, 0.6 sigma_F each per 0.1 px
    t = np.linspace(-20, 20, 401)
    exp = _add(exp, 128 + t * math.cos(math.radians(30)), 80 + t * math.sin(math.radians(30)),
               np.full(t.size, 0.6 * SIGMA_F))
    exp = _add(exp, 128.3, 190.6, 60 * SIGMA_F)
    cat = detect_and_measure(exp, gaussian_psf_image(FWHM))
    c = cat.columns
    streak = (c["flags"] & (1 << FLAG_BITS["STREAK"])) != 0
    on_trail = np.abs(c["y"] - 80 - (c["x"] - 128) * math.tan(math.radians(30))) < 3
    assert on_trail.any()
    assert streak[on_trail].all()
    # a uniform line of length L has sigma_major = L / sqrt(12) = 11.5 px, minor ~ 2 px
    assert c["elongation"][on_trail].min() > 3.0
    i, d = _nearest(cat, 128.3, 190.6)
    assert d < 0.3
    assert not streak[i]
    assert c["elongation"][i] < 1.3


def test_isolated_dipoles_are_fitted():
    """Equal +/- lobes 3 px apart: one dipole each, with the lobes' fluxes and orientation."""
    exp = _noise(shape=(320, 320), seed=2)
    centres = [(60.0 + 100.0 * i, 60.0 + 100.0 * j) for i in range(3) for j in range(2)]
    for x, y in centres:
        exp = _add(exp, x - 1.5, y, 80 * SIGMA_F)
        exp = _add(exp, x + 1.5, y, -80 * SIGMA_F)
    # an unequal pair (ratio 0.2 < dipole_min_flux_ratio) stays two sources
    exp = _add(exp, 160.0, 290.0, 100 * SIGMA_F)
    exp = _add(exp, 167.0, 290.0, -20 * SIGMA_F)
    cat = detect_and_measure(exp, gaussian_psf_image(FWHM))
    c = cat.columns
    idx = []
    for x, y in centres:
        i, d = _nearest(cat, x, y)
        assert d < 0.3
        assert c["is_dipole"][i]
        assert c["flags"][i] & (1 << FLAG_BITS["CENTROID_FAILED"]) == 0
        idx.append(i)
    idx = np.array(idx)
    assert cat.metadata["n_dipoles"] == len(centres)
    # the lobes overlap (3 px vs sigma 1.7 px), so flux and separation are correlated:
    # per dipole the separation scatters by ~0.09 px and each lobe flux by its error;
    # 4-sigma bands on the means of the six
    n = len(centres)
    assert np.mean(c["dipole_separation"][idx]) == pytest.approx(3.0, abs=4 * 0.09 / math.sqrt(n))
    for lobe in ("pos", "neg"):
        err = np.mean(c[f"dipole_{lobe}_flux_err"][idx]) / math.sqrt(n)
        assert np.mean(c[f"dipole_{lobe}_flux"][idx]) == pytest.approx(80 * SIGMA_F, abs=4 * err)
    assert np.all(np.abs(np.abs(c["dipole_angle"][idx]) - 180.0) < 5.0)  # negative at +x
    assert np.all(np.abs(c["psf_flux"][idx]) < 5 * c["psf_flux_err"][idx])
    for x, negative in ((160.0, False), (167.0, True)):  # 7 px < 2 FWHM: a candidate pair
        j, d = _nearest(cat, x, 290.0)
        assert d < 1.0
        assert not c["is_dipole"][j]
        assert c["is_negative"][j] == negative


def test_misregistered_stars_become_dipoles():
    """A template 1 px off: bright stars leave dipoles along the offset, net flux ~ 0."""
    pair = make_pair(SimulationParams(shape=(512, 512), seed=5, n_transients=0, n_variables=0,
                                      n_cosmic_rays=0, kernel_shift=(1.0, 0.0),
                                      star_density=3000.0))
    case = true_difference(pair, dataclasses.replace(pair.truth.kernel, shift=(0.0, 0.0)))
    sci = pair.science
    cat = detect_and_measure(case.difference, sci.psf, science=sci, template=case.matched)
    c = cat.columns
    dip = c["is_dipole"] & ((c["flags"] & 0xFFFF) == 0)
    assert dip.sum() >= 8
    stars = pair.truth.catalogues["stars"]
    for i in np.flatnonzero(dip):
        d = np.hypot(stars["x"] - c["x"][i], stars["y"] - c["y"][i])
        # the dipole sits between the star's two positions (x - 1 in the science)
        assert d.min() < 1.5
        assert stars["flux_science"][d.argmin()] > 2000.0
    # science star at x - 1 (positive), matched template at x (negative): 180 deg
    angle = np.abs(c["dipole_angle"][dip])
    assert np.all(angle > 160.0)
    assert np.all(np.abs(c["psf_flux"][dip]) < 0.2 * c["dipole_pos_flux"][dip])
    # 1 px is a mild misregistration: the power ratio rises but stays under the gate
    assert 0.05 < cat.metadata["footprint_ratio_mean"] < DiaOptions().max_footprint_ratio


def test_bad_subtraction_raises_with_the_numbers():
    pair = make_pair(SimulationParams(shape=(512, 512), seed=6, n_transients=0, n_variables=0,
                                      n_cosmic_rays=0))
    sci, tmpl = pair.science, pair.template
    # "subtract" the template without matching its 3 px PSF to the science's 4.5 px
    bad = sci.with_(image=sci.image - pair.truth.photometric_scale * tmpl.image,
                    variance=sci.variance + pair.truth.photometric_scale**2 * tmpl.variance,
                    mask=sci.mask | tmpl.mask)
    with pytest.raises(BadSubtractionError) as info:
        detect_and_measure(bad, sci.psf, science=sci, label="pair p7")
    err = info.value
    assert err.failed == "footprint_ratio_mean"
    assert err.limit == pytest.approx(0.2)
    assert err.value > err.limit
    assert "pair p7" in str(err)
    assert err.quality["n_science_footprints"] >= 20
    again = pickle.loads(pickle.dumps(err))
    assert (again.failed, again.value, again.quality) == (err.failed, err.value, err.quality)
    # the same image passes when the gate is off, and a good subtraction passes it
    off = DiaOptions(max_footprint_ratio=None, max_footprint_ratio_std=None)
    assert len(detect_and_measure(bad, sci.psf, science=sci, options=off)) > 10
    good = true_difference(pair)
    cat = detect_and_measure(good.difference, sci.psf, science=sci, template=good.matched)
    assert cat.metadata["footprint_ratio_mean"] < 0.1


def test_detected_fraction_gate():
    """A constant offset of 0.5 sigma per pixel is a 6 sigma 'source' everywhere."""
    exp = _noise(seed=4)
    # filtered S/N of an offset b: b * sum(P) / sqrt(sum(P^2)) = b * SIGMA_F
    offset = exp.with_(image=exp.image + np.float32(6.0 / SIGMA_F))
    with pytest.raises(BadSubtractionError) as info:
        detect_and_measure(offset, gaussian_psf_image(FWHM), label="offset")
    assert info.value.failed == "detected_fraction"
    assert info.value.value > 0.5
    assert info.value.quality["expected_fraction"] == pytest.approx(5.733e-7, rel=1e-3)
