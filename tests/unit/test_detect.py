"""Tests of candidate detection and FWHM measurement (:mod:`psfmatch.detect`)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.spatial import cKDTree

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.detect import (
    CANDIDATE_COLUMNS,
    DetectionError,
    detect_candidates,
    measure_fwhm,
)
from psfmatch.errors import PsfMatchError
from psfmatch.exposure import DEFAULT_MASK_PLANES, Exposure
from psfmatch.moments import adaptive_moments
from psfmatch.synth import SimulationParams, make_pair, render_gaussians, science_psf_fwhm_at

SHAPE = (512, 512)
#: intrinsic (pre-pixel) FWHM of pixel-integrated simulated stars: remove a pixel box
PIXEL_VARIANCE = 1.0 / 12.0


@pytest.fixture(scope="module")
def pair():
    return make_pair(SimulationParams(shape=SHAPE, seed=7, star_density=4000.0))


@pytest.fixture(scope="module")
def pair_noiseless():
    return make_pair(SimulationParams(shape=SHAPE, seed=7, star_density=4000.0,
                                      add_noise=False))


def _noise_exposure(shape=(256, 256), sigma=10.0, seed=1, xy0=(0, 0)):
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, sigma, shape)
    return Exposure(image=image, mask=np.zeros(shape, np.int32),
                    variance=np.full(shape, sigma**2), xy0=xy0)


def _template_truth(pair):
    """Template positions, fluxes and optimal-ish S/N of the truth stars.

    S/N = F / sqrt(4 pi sigma^2 v + F): the noise of a PSF-weighted flux on a sky of
    per-pixel variance v (sky + read noise, gain 1), plus the source's Poisson noise.
    """
    p = pair.truth.params
    stars = pair.truth.catalogues["stars"]
    sigma = p.template_fwhm / SIGMA_TO_FWHM
    v = p.sky_template / p.gain + (p.read_noise / p.gain) ** 2
    flux = stars["flux_template"]
    snr = flux / np.sqrt(4.0 * np.pi * sigma**2 * v + flux)
    return stars["x_template"], stars["y_template"], flux, snr


def _all_sources(pair):
    cats = pair.truth.catalogues
    x = np.concatenate([cats[c]["x_template"] for c in ("stars", "galaxies", "variables")])
    y = np.concatenate([cats[c]["y_template"] for c in ("stars", "galaxies", "variables")])
    f = np.concatenate([cats[c]["flux_template"] for c in ("stars", "galaxies", "variables")])
    return x, y, f


def _measurable_stars(pair, min_snr):
    """Truth stars with S/N > min_snr that a non-deblending detector can centroid.

    Excluded: stars within 6 px of the frame edge or of the (garbage-valued, BAD but
    not excluded) bad column, and stars with another source of more than 10 % of their
    flux within 8 px (blends share a footprint: no deblending, as ip_diffim's detection).
    """
    xs, ys, flux, snr = _template_truth(pair)
    ax, ay, af = _all_sources(pair)
    tree = cKDTree(np.c_[ax, ay])
    ny, nx = pair.template.shape
    inner = (xs > 6) & (xs < nx - 7) & (ys > 6) & (ys < ny - 7) \
        & (np.abs(xs - pair.truth.bad_column) > 6)
    isolated = np.array([
        all(af[j] < 0.1 * flux[i] for j in tree.query_ball_point([xs[i], ys[i]], 8.0)
            if np.hypot(ax[j] - xs[i], ay[j] - ys[i]) > 0)
        for i in range(xs.size)])
    want = (snr > min_snr) & inner & isolated
    return xs[want], ys[want]


@pytest.mark.parametrize(("threshold", "min_snr"), [(10.0, 60.0), (5.0, 30.0)])
def test_completeness(pair, threshold, min_snr):
    # A 10-sigma *per-pixel* threshold with 5 pixels needs an integrated S/N of ~45 for
    # a 3-px FWHM star, so S/N > 30 is checked at 5 sigma and S/N > 60 at 10 sigma.
    cat = detect_candidates(pair.template, threshold=threshold)
    xs, ys = _measurable_stars(pair, min_snr)
    assert xs.size >= 10
    d, _ = cKDTree(np.c_[cat["x"], cat["y"]]).query(np.c_[xs, ys])
    assert np.mean(d < 1.0) >= 0.9


@pytest.mark.parametrize("threshold", [10.0, 5.0])
def test_few_spurious(pair, threshold):
    # A detection is genuine if it lies within 3 px of a truth star, galaxy, variable
    # (template positions) or cosmic-ray pixel, or within 3 px of the bad column (whose
    # 1e5-ADU pixels form one huge footprint replaced by its bbox centre); everything
    # else (noise peaks) counts as spurious.
    cat = detect_candidates(pair.template, threshold=threshold)
    ax, ay, _ = _all_sources(pair)
    cr = pair.truth.catalogues["cosmic_rays_template"]
    tree = cKDTree(np.c_[np.r_[ax, cr["x"]], np.r_[ay, cr["y"]]])
    d, _ = tree.query(np.c_[cat["x"], cat["y"]])
    spurious = (d > 3.0) & (np.abs(cat["x"] - pair.truth.bad_column) > 3.0)
    assert cat["id"].size >= 40
    assert spurious.sum() <= max(1, 0.03 * cat["id"].size)


def test_columns_types_and_order(pair):
    cat = detect_candidates(pair.template)
    assert list(cat) == list(CANDIDATE_COLUMNS)
    for name, dtype in CANDIDATE_COLUMNS.items():
        assert cat[name].dtype == dtype, name
    n = cat["id"].size
    np.testing.assert_array_equal(cat["id"], np.arange(1, n + 1))
    assert np.all(np.diff(cat["flux"]) <= 0)
    np.testing.assert_allclose(cat["snr"], cat["flux"] / cat["flux_err"])
    assert np.all(cat["area"] >= 5)
    assert np.all(cat["area"][~cat["replaced"]] <= 500)
    # the bad column (not an excluded plane by default) is one replaced footprint
    # (stars touching it join the footprint, so its bbox may be a few columns wide)
    col = pair.truth.bad_column
    on_col = cat["replaced"] & (np.abs(cat["x"] - col) <= 2)
    assert on_col.sum() == 1
    assert cat["area"][on_col][0] >= SHAPE[0]
    assert cat["y"][on_col][0] == (0 + SHAPE[0] - 1) // 2
    assert cat["x"][on_col][0] == np.round(cat["x"][on_col][0])


def test_input_unmodified(pair):
    t = pair.template
    before = [a.copy() for a in (t.image, t.variance, t.mask)]
    detect_candidates(t, threshold_type="stdev")
    detect_candidates(t)
    for a, b in zip(before, (t.image, t.variance, t.mask), strict=True):
        np.testing.assert_array_equal(a, b)


def test_replaced_blob_and_xy0():
    exp0 = _noise_exposure(sigma=1.0, seed=3)
    image = exp0.image.copy()
    # an L-shaped blob (area 30*10 + 20*10 = 500 + ... px) whose centroid is not its bbox
    # centre, plus a small star
    image[100:130, 50:60] += 50.0
    image[120:130, 60:90] += 50.0
    render_gaussians(image, 200.0, 40.0, 2000.0, 1.5)
    xy0 = (-7, 13)
    exp = exp0.with_(image=image, xy0=xy0)
    cat = detect_candidates(exp, n_pixels_max=250)
    assert cat["id"].size == 2
    big = np.argmax(cat["area"])
    assert cat["area"][big] == 30 * 10 + 10 * 30
    assert cat["replaced"].tolist() == [i == big for i in range(2)]
    # bbox columns 50..89 -> parent -7 + (50, 89); rows 100..129 -> 13 + (100, 129);
    # C++ integer division truncates toward zero
    assert cat["x"][big] == int((43 + 82) / 2)
    assert cat["y"][big] == int((113 + 142) / 2)
    assert cat["flux"][big] == pytest.approx(600 * 50.0, rel=0.02)
    small = 1 - big
    assert cat["x"][small] == pytest.approx(200.0 - 7, abs=0.1)
    assert cat["y"][small] == pytest.approx(40.0 + 13, abs=0.1)
    # a large enough n_pixels_max keeps the measured centroid
    cat2 = detect_candidates(exp, n_pixels_max=1000)
    assert not cat2["replaced"].any()
    assert cat2["x"][np.argmax(cat2["area"])] != pytest.approx(cat["x"][big], abs=0.5)


def test_threshold_types_direction(pair):
    t = pair.template

    def count(**kw):
        return detect_candidates(t, **kw)["id"].size

    for kind, hi, lo in (("pixel_stdev", 20.0, 5.0), ("stdev", 20.0, 5.0),
                         ("variance", 2.0, 0.5), ("value", 200.0, 50.0)):
        n_hi, n_lo = count(threshold_type=kind, threshold=hi), \
            count(threshold_type=kind, threshold=lo)
        assert n_lo > n_hi > 0, kind
    # the variance plane includes the sources' Poisson noise, so a per-pixel threshold
    # is higher on sources than the same multiple of the global stdev
    assert count(threshold_type="stdev", threshold=10.0) \
        > count(threshold_type="pixel_stdev", threshold=10.0)


def test_threshold_types_agree_on_uniform_noise():
    # constant variance plane: all four kinds describe the same 10-sigma threshold
    sigma = 3.0
    exp0 = _noise_exposure(sigma=sigma, seed=5)
    rng = np.random.default_rng(6)
    image = exp0.image.copy()
    render_gaussians(image, rng.uniform(10, 246, 60), rng.uniform(10, 246, 60),
                     rng.uniform(100.0, 3000.0, 60), 1.5)
    exp = exp0.with_(image=image)
    n = [detect_candidates(exp, threshold_type=kind, threshold=thr)["id"].size
         for kind, thr in (("pixel_stdev", 10.0), ("stdev", 10.0), ("value", 10.0 * sigma),
                           ("variance", 10.0 / sigma))]
    assert n[0] >= 20
    assert max(n) - min(n) <= 2


def test_pure_noise_gives_typed_empty(caplog):
    exp = _noise_exposure()
    with caplog.at_level(logging.INFO, logger="psfmatch.detect"):
        cat = detect_candidates(exp)
    assert list(cat) == list(CANDIDATE_COLUMNS)
    for name, dtype in CANDIDATE_COLUMNS.items():
        assert cat[name].shape == (0,)
        assert cat[name].dtype == dtype
    assert "detected 0 sources" in caplog.text


def test_bad_pixels_not_detected():
    exp0 = _noise_exposure(sigma=1.0)
    image = exp0.image.copy()
    render_gaussians(image, [60.0, 180.0, 120.0], [60.0, 180.0, 120.0], 3000.0, 1.5)
    mask = np.zeros_like(exp0.mask)
    mask[170:191, 170:191] = 1 << DEFAULT_MASK_PLANES["SAT"]
    image[110:131, 110:131] = np.nan
    cat = detect_candidates(exp0.with_(image=image, mask=mask))
    assert cat["id"].size == 1
    assert cat["x"][0] == pytest.approx(60.0, abs=0.1)
    # without SAT among the excluded planes the masked star is found again
    cat2 = detect_candidates(exp0.with_(image=image, mask=mask), bad_mask_planes=())
    assert cat2["id"].size == 2


def test_bad_options():
    exp = _noise_exposure(shape=(64, 64))
    with pytest.raises(DetectionError, match="threshold_type"):
        detect_candidates(exp, threshold_type="sigma")
    with pytest.raises(DetectionError, match="n_pixels_max=3"):
        detect_candidates(exp, n_pixels_max=3)
    assert issubclass(DetectionError, PsfMatchError)
    assert issubclass(DetectionError, ValueError)


# --------------------------------------------------------------------------- FWHM
def test_adaptive_moments_exact_on_gaussian():
    yy, xx = np.mgrid[-15:16, -15:16].astype(float)
    s = np.array([1.2, 2.0, 3.5])
    stamps = np.exp(-0.5 * (((xx - 0.3) / s[:, None, None]) ** 2
                            + ((yy + 0.2) / (1.3 * s[:, None, None])) ** 2))
    cov, cen, ok = adaptive_moments(stamps)
    assert ok.all()
    np.testing.assert_allclose(np.sqrt(cov[:, 0]), s, rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(cov[:, 1]), 1.3 * s, rtol=1e-4)
    np.testing.assert_allclose(cov[:, 2], 0.0, atol=1e-5)
    np.testing.assert_allclose(cen, np.tile([0.3, -0.2], (3, 1)), atol=1e-4)


def _bright_stars(pair):
    stars = pair.truth.catalogues["stars"]
    f = stars["flux_template"]
    return (f > 3000) & (f < 30000) & stars["in_frame"] & ~stars["saturated"]


@pytest.mark.parametrize("which", ["pair", "pair_noiseless"])
def test_measure_fwhm_on_simulation(request, which):
    pr = request.getfixturevalue(which)
    p = pr.truth.params
    stars = pr.truth.catalogues["stars"]
    sel = _bright_stars(pr)
    fwhm, n = measure_fwhm(pr.template, stars["x_template"][sel], stars["y_template"][sel],
                           pixel_variance=PIXEL_VARIANCE)
    assert n >= 10
    assert fwhm == pytest.approx(p.template_fwhm, rel=0.03)
    # science: stars near the centre (the kernel width varies across the field)
    cx, cy = (SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2
    xs, ys = stars["x"] - p.kernel_shift[0], stars["y"] - p.kernel_shift[1]
    near = sel & (np.hypot(xs - cx, ys - cy) < 160)
    fwhm_s, n_s = measure_fwhm(pr.science, xs[near], ys[near],
                               pixel_variance=PIXEL_VARIANCE)
    assert n_s >= 3
    assert fwhm_s == pytest.approx(float(science_psf_fwhm_at(p, cx, cy)), rel=0.03)
    # without the pixel correction the FWHM includes the pixel box and is larger
    fwhm_pix, _ = measure_fwhm(pr.template, stars["x_template"][sel],
                               stars["y_template"][sel])
    assert fwhm_pix == pytest.approx(
        SIGMA_TO_FWHM * np.sqrt((fwhm / SIGMA_TO_FWHM) ** 2 + PIXEL_VARIANCE), rel=2e-3)


def test_measure_fwhm_from_detections(pair):
    cat = detect_candidates(pair.template)
    sel = (cat["snr"] > 50) & ~cat["replaced"] & (cat["peak"] < 2000)
    fwhm, n = measure_fwhm(pair.template, cat["x"][sel], cat["y"][sel],
                           pixel_variance=PIXEL_VARIANCE)
    assert n >= 3
    assert fwhm == pytest.approx(pair.truth.params.template_fwhm, rel=0.03)


def test_measure_fwhm_too_few_stars(pair):
    stars = pair.truth.catalogues["stars"]
    sel = np.flatnonzero(_bright_stars(pair))
    x, y = stars["x_template"], stars["y_template"]
    # two usable stars plus one at the edge and one off the image
    xs = np.r_[x[sel[:2]], 3.0, -50.0]
    ys = np.r_[y[sel[:2]], 200.0, 200.0]
    with pytest.raises(DetectionError, match=r"given 4, finite 4, isolated 4, inside 2"):
        measure_fwhm(pair.template, xs, ys)
    with pytest.raises(DetectionError, match="given 0"):
        measure_fwhm(pair.template, [], [])
    with pytest.raises(DetectionError, match="equal length"):
        measure_fwhm(pair.template, [1.0, 2.0], [1.0])


def test_measure_fwhm_skips_crowded_and_masked():
    shape = (200, 200)
    image = np.zeros(shape)
    xs = np.array([30.0, 60.0, 90.0, 120.0, 150.0, 150.0])
    ys = np.array([40.0, 40.0, 40.0, 40.0, 40.0, 50.0])
    render_gaussians(image, xs, ys, 1000.0, 2.0)
    mask = np.zeros(shape, np.int32)
    mask[40, 120] = 1 << DEFAULT_MASK_PLANES["CR"]
    exp = Exposure(image=image, mask=mask, variance=np.ones(shape))
    # 150,40 and 150,50 are within 2 * half_width of each other; 120,40 has a CR
    fwhm, n = measure_fwhm(exp, xs, ys, half_width=10)
    assert n == 3
    assert fwhm == pytest.approx(SIGMA_TO_FWHM * np.sqrt(4.0 + 1.0 / 12.0), rel=2e-3)
    fwhm0, n0 = measure_fwhm(exp, xs[:3], ys[:3], half_width=10,
                             pixel_variance=PIXEL_VARIANCE)
    assert n0 == 3
    assert fwhm0 == pytest.approx(SIGMA_TO_FWHM * 2.0, rel=2e-3)
