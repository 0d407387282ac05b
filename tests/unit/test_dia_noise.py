"""The S/N scale of DIA detection on noise: null tests, correlated noise, empty and NaN input.

Noise-only expectation (derived in ``psfmatch.dia.filtering.noise_peak_density``): the
filtered S/N image of white noise is a Gaussian random field; its peaks above ``u`` per
pixel follow the Euler-characteristic density
``rho(u) = sqrt(det Lambda) / (2 pi)^1.5 * u * exp(-u^2 / 2)`` with ``Lambda`` the
gradient covariance. For the simulator's 4.5 px science PSF, ``rho(5) = 1.4e-7`` per
pixel and sign: 0.28 detections per 10^6 pixels for both signs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from tests.dia_support import simulate

from psfmatch.convolution import correlate
from psfmatch.dia import (
    COLUMNS,
    DiaOptions,
    detect_and_measure,
    gaussian_psf_image,
    matched_filter,
    noise_peak_density,
)
from psfmatch.dia.filtering import robust_sigma
from psfmatch.dia.footprints import find_detections
from psfmatch.exposure import Exposure
from psfmatch.psf import embed_centred

MASK_FLAGS = 0xFFFF  # bits copied from mask planes (flags.FLAG_BITS 0-15)


def _noise_exposure(shape, seed, sigma=1.0):
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, sigma, shape).astype(np.float32)
    return Exposure(image=image, mask=np.zeros(shape, np.int32),
                    variance=np.full(shape, sigma**2, np.float32))


@pytest.fixture(scope="module")
def null_cases():
    """Two epochs of the same sky (stars, galaxies, saturation, a bad column), no change."""
    return [simulate(seed=seed, shape=(1024, 1024), n_transients=0, n_variables=0,
                     n_cosmic_rays=0) for seed in (300, 301, 302, 303)]


def test_null_detection_rate(null_cases, record_property):
    """<= 1 clean detection per 10^6 usable pixels at 5 sigma (expected 0.28)."""
    n_clean = n_all = n_pix = 0
    expected = 0.0
    for case in null_cases:
        cat = detect_and_measure(case.difference, case.pair.science.psf, template=case.matched)
        n_pix += cat.metadata["n_usable"]
        expected += cat.metadata["expected_noise_peaks"]
        n_all += len(cat)
        n_clean += int(np.count_nonzero((cat.columns["flags"] & MASK_FLAGS) == 0))
    rate = n_clean / n_pix * 1e6
    record_property("null_clean_per_mpix", rate)
    print(f"null: {n_clean} clean ({n_all} in all) in {n_pix} px = {rate:.2f} per 1e6; "
          f"expected {expected:.2f} ({expected / n_pix * 1e6:.2f} per 1e6)")
    assert n_pix > 3.0e6
    # expected ~1 in 3.8e6 px; <= 1 per 1e6 allows 3, P(Poisson(1.1) > 3) ~ 2.5 %
    assert rate <= 1.0
    assert expected / n_pix * 1e6 == pytest.approx(0.28, rel=0.1)


def test_null_peak_counts_follow_noise_model(null_cases):
    """At 3 sigma (hundreds of peaks) the count is within the noise model's band.

    The template part of the noise is smoother than PSF-filtered white noise, so the
    field has fewer peaks than ``noise_peak_density`` predicts for it, not more:
    0.6 <= measured / predicted <= 1.15 (Poisson: +-5 % at ~500 peaks).
    """
    found = predicted = 0.0
    for case in null_cases[:2]:
        cat = detect_and_measure(case.difference, case.pair.science.psf, template=case.matched,
                                 options=DiaOptions(threshold=3.0))
        found += len(cat)
        predicted += cat.metadata["expected_noise_peaks"]
    assert predicted > 300
    assert 0.6 <= found / predicted <= 1.15, (found, predicted)


def test_white_noise_peaks_match_euler_characteristic():
    """Pure white noise: peaks above 3 sigma match rho(u) within Poisson + 10 %."""
    exp = _noise_exposure((1024, 1024), seed=7)
    psf = gaussian_psf_image(3.0)
    filtered = matched_filter(exp, psf)
    good = filtered.defined & filtered.usable
    # unit-variance S/N (white noise: the measured noise scale is 1)
    assert filtered.noise_scale == pytest.approx(1.0, abs=0.02)
    assert robust_sigma(filtered.snr[good]) == pytest.approx(1.0, abs=0.02)
    dets = find_detections(filtered, threshold=3.0, polarity="both", grow=0, peak_radius=1)
    expected = 2 * good.sum() * noise_peak_density(3.0, psf)
    # ~1000 peaks: Poisson 3 %; the EC density counts maxima minus saddles (a few %)
    assert len(dets.col) == pytest.approx(expected, rel=0.12), (len(dets.col), expected)


def test_correlated_noise_scale_matches_kernel(null_cases):
    """The measured noise scale c equals the one the true kernel predicts.

    Sky-limited, with science PSF P, kernel K and sky variances V_S, V_T:
    c^2 = [sum(P^2) V_S + sum((P*K)^2) V_T] / [sum(P^2) (V_S + sum(K^2) V_T)]
    (the variance plane keeps only the diagonal sum(K^2) V_T of the convolved template
    noise). After rescaling the S/N image has unit robust sigma.
    """
    case = null_cases[0]
    truth, p = case.truth, case.truth.params
    cx, cy = truth.kernel.centre
    psf = case.pair.science.psf.image_at(cx, cy)
    kern = truth.kernel.kernel_at(cx, cy)
    v_s = p.sky_science / p.gain + (p.read_noise / p.gain) ** 2
    v_t = p.sky_template / p.gain + (p.read_noise / p.gain) ** 2
    pk = correlate(embed_centred(psf, 95), kern)
    c2 = (np.sum(psf**2) * v_s + np.sum(pk**2) * v_t) / (
        np.sum(psf**2) * (v_s + np.sum(kern**2) * v_t))
    filtered = matched_filter(case.difference, psf, exclude_planes=DiaOptions().exclude_planes,
                              template_variance=case.matched.variance)
    # robust sigma from ~10^4 independent patches: ~1.5 %; stars add a little
    assert filtered.noise_scale == pytest.approx(math.sqrt(c2), rel=0.04)
    assert math.sqrt(c2) > 1.1  # the effect is real for this kernel
    good = filtered.defined & filtered.usable
    assert robust_sigma(filtered.snr[good]) == pytest.approx(1.0, abs=0.03)
    naive = matched_filter(case.difference, psf, exclude_planes=DiaOptions().exclude_planes,
                           rescale_noise=False)
    assert robust_sigma(naive.snr[good]) == pytest.approx(math.sqrt(c2), rel=0.04)


def test_empty_difference_keeps_schema():
    """No detection: an empty catalogue with every column and dtype, not an error."""
    exp = _noise_exposure((128, 128), seed=3)
    cat = detect_and_measure(exp, gaussian_psf_image(4.0), science=exp, template=exp)
    assert len(cat) == 0
    assert list(cat.columns) == list(COLUMNS)
    for name, (dtype, _, _) in COLUMNS.items():
        assert cat.columns[name].dtype == np.dtype(dtype), name
        assert cat.columns[name].shape == (0,)
    assert set(cat.units) == set(COLUMNS)
    assert cat.units["psf_flux"] == "adu"
    assert cat.units["x"] == "pix"
    assert cat.metadata["n_sources"] == 0


def test_all_nan_difference_is_empty():
    """A difference without one usable pixel gives an empty catalogue and passes the gate."""
    shape = (64, 64)
    exp = Exposure(image=np.full(shape, np.nan, np.float32), mask=np.zeros(shape, np.int32),
                   variance=np.full(shape, np.nan, np.float32))
    cat = detect_and_measure(exp, gaussian_psf_image(3.0))
    assert len(cat) == 0
    assert cat.metadata["n_usable"] == 0


def test_nan_block_does_not_stop_detection():
    """Sources beside a NaN block are measured normally; the block yields nothing."""
    psf = gaussian_psf_image(4.0, size=25)
    exp = _noise_exposure((256, 256), seed=11)
    image = exp.image.copy()
    positions = [(60, 70), (190, 200), (128, 100)]  # the last one inside the NaN block
    for x, y in positions:
        image[y - 12:y + 13, x - 12:x + 13] += (400.0 * psf).astype(np.float32)
    image[80:140, 100:160] = np.nan
    exp = exp.with_(image=image)
    cat = detect_and_measure(exp, psf)
    c = cat.columns
    assert np.all(np.isfinite(c["psf_flux"]))
    assert np.all(np.isfinite(c["x"]))
    for x, y in positions[:2]:
        d = np.hypot(c["x"] - x, c["y"] - y)
        assert d.min() < 0.5  # S/N ~ 60: centroid sigma sqrt(2) s / 60 ~ 0.04 px
        # flux 400 with unit noise: sigma_F = sqrt(4 pi s^2) = 6.8, 5 sigma = 34
        assert c["psf_flux"][d.argmin()] == pytest.approx(400.0, abs=34.0)
    inside = (c["x"] > 100) & (c["x"] < 160) & (c["y"] > 80) & (c["y"] < 140)
    assert not inside.any()
