"""Tests of the seeded template/science simulator (:mod:`psfmatch.synth`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage, signal

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.convolution import correlate_spatial
from psfmatch.errors import ConfigError
from psfmatch.synth import (
    BAD_COLUMN_VALUE,
    SimulationParams,
    Truth,
    TruthKernel,
    gaussian_psf_image,
    kernel_sigmas,
    make_pair,
    science_psf_fwhm_at,
    source_table,
)

MASKED = ("SAT", "BAD", "CR")


def _grid(exp):
    ny, nx = exp.shape
    x0, y0 = exp.xy0
    return (np.arange(nx, dtype=float)[None, :] + x0, np.arange(ny, dtype=float)[:, None] + y0)


def _residual(pair):
    """``science - K (x) template - background`` and its expected variance.

    Var = V_sci + sum_ij w_i w_j (V_tmpl (x) B_i B_j): the correlation of the template
    variance with the pixel-wise square of the spatially varying kernel.
    """
    t, s, truth = pair.template, pair.science, pair.truth
    k = truth.kernel
    xx, yy = _grid(s)
    resid = s.image - k.apply(t.image, xy0=t.xy0) - truth.background_at(xx, yy)
    w = k.weight_images(t.shape, t.xy0)
    n = len(k.basis)
    sq = [k.basis[i] * k.basis[j] for i in range(n) for j in range(n)]
    wsq = [w[i] * w[j] for i in range(n) for j in range(n)]
    var = s.variance + correlate_spatial(t.variance, sq, wsq)
    return resid, var


def _bad_pixels(pair, exclude_radius=15.0):
    """Masked science pixels, template masks dilated by the kernel, border, and sources."""
    t, s, truth = pair.template, pair.science, pair.truth
    ks = truth.kernel.kernel_size
    # grow the science mask a little: SAT is set on the *noisy* value, so keeping the
    # unclipped neighbours of a saturated core would select downward fluctuations
    bad = ndimage.binary_dilation((s.mask & s.plane_bitmask(MASKED)) != 0,
                                  structure=np.ones((7, 7), bool))
    tbad = (t.mask & t.plane_bitmask(MASKED)) != 0
    bad |= ndimage.binary_dilation(tbad, structure=np.ones((ks, ks), bool))
    edge = ks // 2
    bad[:edge], bad[-edge:], bad[:, :edge], bad[:, -edge:] = True, True, True, True
    xx, yy = _grid(s)
    cats = truth.catalogues
    for name in ("transients", "variables"):
        for x, y in zip(cats[name]["x"], cats[name]["y"], strict=True):
            bad |= (xx - x) ** 2 + (yy - y) ** 2 < exclude_radius**2
    return bad


def _moments(img):
    yy, xx = np.indices(img.shape, dtype=float)
    f = img.sum()
    cx, cy = (img * xx).sum() / f, (img * yy).sum() / f
    mxx = (img * (xx - cx) ** 2).sum() / f
    myy = (img * (yy - cy) ** 2).sum() / f
    return f, cx, cy, 0.5 * (mxx + myy)


@pytest.fixture(scope="module")
def pair():
    params = SimulationParams(shape=(512, 512), seed=7, xy0=(1000, 2000),
                              kernel_shift=(0.3, -0.2), saturation=1000.0, bad_column=200,
                              n_cosmic_rays=15, n_transients=15, n_variables=15)
    return make_pair(params)


# ---------------------------------------------------------------- reproducibility
def test_same_seed_bitwise_identical_and_different_seed_differs():
    p = SimulationParams(shape=(128, 160), seed=3)
    a, b = make_pair(p), make_pair(p)
    c = make_pair(SimulationParams(shape=(128, 160), seed=4))
    for role in ("template", "science"):
        ea, eb, ec = getattr(a, role), getattr(b, role), getattr(c, role)
        for plane in ("image", "variance", "mask"):
            assert getattr(ea, plane).tobytes() == getattr(eb, plane).tobytes()
        assert not np.array_equal(ea.image, ec.image)
    assert a.science.image.dtype == np.float32
    assert a.science.variance.dtype == np.float32
    assert a.science.mask.dtype == np.int32


# ---------------------------------------------------------------- truth consistency
def test_residual_is_pure_noise(pair):
    resid, var = _residual(pair)
    good = ~_bad_pixels(pair)
    z = resid[good] / np.sqrt(var[good])
    n = z.size
    assert n > 100_000
    # z = (n_S - K (x) n_T) / sigma is correlated over the kernel footprint. With
    # a = V_S, b = V_T and A(l) = sum_k K(k) K(k + l) the autocorrelation is
    # rho(l) = (a delta(l) + b A(l)) / (a + b A(0)), so Var(mean z) = sum_l rho(l) / N
    # and, for a Gaussian field, Var(std z) ~= sum_l rho(l)^2 / (2 N). Use typical
    # (median) a and b and the central kernel; require agreement within 5 sigma.
    t, s, k = pair.template, pair.science, pair.truth.kernel
    kc = k.kernel_at(*k.centre)
    acf = signal.correlate(kc, kc, mode="full")
    a, b = np.median(s.variance), np.median(t.variance)
    rho = b * acf / (a + b * acf.max())
    rho[acf.shape[0] // 2, acf.shape[1] // 2] += a / (a + b * acf.max())
    sigma_mean = math.sqrt(rho.sum() / n)
    sigma_std = math.sqrt((rho**2).sum() / (2 * n))
    assert abs(z.mean()) < 5 * sigma_mean, (z.mean(), sigma_mean)
    assert abs(z.std() - 1.0) < 5 * sigma_std, (z.std(), sigma_std)


def test_transient_and_variable_fluxes_recovered(pair):
    resid, _ = _residual(pair)
    t, s, truth = pair.template, pair.science, pair.truth
    k = truth.kernel
    x0, y0 = s.xy0
    c = k.kernel_size // 2
    r = 9
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    tbad = (t.mask & t.plane_bitmask(MASKED)) != 0
    sbad = (s.mask & s.plane_bitmask(MASKED)) != 0
    dx, dy = k.shift
    cats = truth.catalogues
    sources = [(x, y, f) for x, y, f in zip(cats["transients"]["x"], cats["transients"]["y"],
                                            cats["transients"]["flux_science"], strict=True)]
    sources += [(x - dx, y - dy, f) for x, y, f in zip(
        cats["variables"]["x"], cats["variables"]["y"], cats["variables"]["flux_difference"],
        strict=True)]
    pos = np.array([(x, y) for x, y, _ in sources])
    tested = 0
    for x, y, flux in sources:
        if np.sort(np.hypot(pos[:, 0] - x, pos[:, 1] - y))[1] < 2 * r + 2:
            continue  # blended with another transient or variable
        ic, jc = round(x - x0), round(y - y0)
        if min(ic, jc) < r + c or ic >= s.shape[1] - r - c or jc >= s.shape[0] - r - c:
            continue
        ap = ((xx + ic - (x - x0)) ** 2 + (yy + jc - (y - y0)) ** 2 <= r * r).astype(float)
        sl = np.s_[jc - r : jc + r + 1, ic - r : ic + r + 1]
        tsl = np.s_[jc - r - c : jc + r + c + 1, ic - r - c : ic + r + c + 1]
        if sbad[sl].any() or tbad[tsl].any():
            continue
        measured = (resid[sl] * ap).sum()
        # aperture sum of K (x) n_T = sum_p n_T(p) g(p) with g = aperture (*) K (convolution)
        g = signal.convolve(ap, k.kernel_at(x, y), mode="full")
        noise = math.sqrt((s.variance[sl] * ap).sum() + (t.variance[tsl] * g**2).sum())
        assert abs(measured - flux) < 5 * noise, (x, y, measured, flux, noise)
        tested += 1
    assert tested >= 8


# ---------------------------------------------------------------- kernel
def test_kernel_sum_shift_and_width_gradient():
    p = SimulationParams(shape=(600, 400), kernel_shift=(0.25, -0.4), xy0=(-50, 30))
    k = TruthKernel.from_params(p)
    ny, nx = p.shape
    x0, y0 = p.xy0
    xs = np.linspace(x0, x0 + nx - 1, 7)
    ys = np.linspace(y0, y0 + ny - 1, 5)
    for x in xs:
        for y in ys:
            assert abs(k.kernel_at(x, y).sum() - p.photometric_scale) < 1e-12
    np.testing.assert_allclose(k.sum_at(*np.meshgrid(xs, ys)), p.photometric_scale, atol=1e-12)
    c = p.kernel_size // 2

    def width(x, y):
        f, cx, cy, m2 = _moments(k.kernel_at(x, y))
        assert cx - c == pytest.approx(0.25, abs=1e-9)
        assert cy - c == pytest.approx(-0.4, abs=1e-9)
        return math.sqrt(m2)

    sig_k = math.sqrt(p.science_fwhm**2 - p.template_fwhm**2) / SIGMA_TO_FWHM
    w_lo = width(x0, y0)  # m = -1: gradient direction has positive x and y components
    w_mid = width(*k.centre)
    w_hi = width(x0 + nx - 1, y0 + ny - 1)
    assert w_mid == pytest.approx(sig_k, rel=1e-9)
    assert (w_hi - w_lo) / w_mid == pytest.approx(p.kernel_width_gradient, rel=1e-9)
    # varies in both directions
    assert width(x0 + nx - 1, k.centre[1]) > w_mid
    assert width(k.centre[0], y0 + ny - 1) > w_mid


def test_science_star_width_matches_model():
    p = SimulationParams(shape=(256, 256), add_noise=False, star_density=150.0,
                         galaxy_density=0.0, background=(0.0, 0.0, 0.0), n_cosmic_rays=0,
                         n_transients=0, n_variables=0, bad_column=None, saturation=1e12)
    pair = make_pair(p)
    stars = pair.truth.catalogues["stars"]
    xc, yc = pair.truth.kernel.centre
    dist = np.hypot(stars["x"] - xc, stars["y"] - yc)
    order = np.argsort(dist)
    for i in order:
        others = np.hypot(stars["x"] - stars["x"][i], stars["y"] - stars["y"][i])
        if np.sort(others)[1] > 30 and dist[i] < 80:
            break
    else:
        pytest.fail("no isolated star near the centre")
    x, y = stars["x"][i], stars["y"][i]
    ic, jc = round(x), round(y)
    stamp = pair.science.image[jc - 15 : jc + 16, ic - 15 : ic + 16].astype(float)
    flux, cx, cy, m2 = _moments(stamp)
    assert flux == pytest.approx(stars["flux_science"][i], rel=1e-3)
    assert cx + ic - 15 == pytest.approx(x, abs=0.02)
    sigma = math.sqrt(m2 - 1.0 / 12.0)  # remove the pixel-integration variance
    expected_centre = math.hypot(p.template_fwhm, math.sqrt(p.science_fwhm**2 - p.template_fwhm**2))
    assert sigma * SIGMA_TO_FWHM == pytest.approx(expected_centre, rel=0.02)
    assert sigma * SIGMA_TO_FWHM == pytest.approx(float(science_psf_fwhm_at(p, x, y)), rel=2e-3)
    assert float(science_psf_fwhm_at(p, xc, yc)) == pytest.approx(p.science_fwhm, rel=1e-12)
    assert pair.science.psf.fwhm == pytest.approx(p.science_fwhm, rel=1e-12)


def test_gaussian_psf_image():
    img = gaussian_psf_image(3.0, 25)
    assert img.sum() == pytest.approx(1.0, abs=1e-12)
    _, cx, cy, m2 = _moments(img)
    assert (cx, cy) == (pytest.approx(12.0), pytest.approx(12.0))
    assert math.sqrt(m2 - 1 / 12) * SIGMA_TO_FWHM == pytest.approx(3.0, rel=1e-4)


# ---------------------------------------------------------------- masks and artefacts
def test_masks(pair):
    p = pair.truth.params
    for role, sky in (("template", p.sky_template), ("science", p.sky_science)):
        exp = getattr(pair, role)
        sat, bad, cr = exp.plane("SAT"), exp.plane("BAD"), exp.plane("CR")
        assert (sat & ~cr).sum() > 0  # stars saturate, not only cosmic rays
        np.testing.assert_array_equal(exp.image[sat & ~bad], np.float32(p.saturation - sky))
        assert np.all(exp.image[~sat & ~bad] + sky < p.saturation)
        col = p.bad_column
        assert bad[:, col].all() and bad.sum() == exp.shape[0]
        assert np.all(exp.image[:, col] == BAD_COLUMN_VALUE)
        crs = pair.truth.catalogues[f"cosmic_rays_{role}"]
        assert np.unique(crs["hit"]).size == p.n_cosmic_rays
        x0, y0 = exp.xy0
        truth_pix = set(zip(crs["y"] - y0, crs["x"] - x0, strict=True))
        assert set(zip(*np.nonzero(cr), strict=True)) == truth_pix
        assert exp.metadata["SATURATE"] == p.saturation - sky
        assert exp.metadata["BUNIT"] == "ADU"
    assert pair.truth.catalogues["stars"]["saturated"].any()


# ---------------------------------------------------------------- warped template
def test_warped_template_wcs_and_positions():
    p = SimulationParams(shape=(256, 320), template_offset=(3.3, -2.7, 0.8), xy0=(100, 200),
                         seed=11, n_cosmic_rays=0, add_noise=False, galaxy_density=0.0)
    pair = make_pair(p)
    stars = pair.truth.catalogues["stars"]
    x0, y0 = p.xy0
    sel = stars["in_frame"]
    ra_t, dec_t = pair.template.wcs.pixel_to_world_values(stars["x_template"][sel] - x0,
                                                          stars["y_template"][sel] - y0)
    px, py = pair.science.wcs.world_to_pixel_values(ra_t, dec_t)
    np.testing.assert_allclose(px, stars["x"][sel] - x0, atol=1e-3)
    np.testing.assert_allclose(py, stars["y"][sel] - y0, atol=1e-3)
    # the template image really has the star at its template-grid position
    tmpl = pair.template
    xt, yt = stars["x_template"], stars["y_template"]
    gal = pair.truth.catalogues["galaxies"]
    px_all = np.concatenate([xt, gal["x_template"]])
    py_all = np.concatenate([yt, gal["y_template"]])
    nearest = np.sort(np.hypot(xt[:, None] - px_all, yt[:, None] - py_all), axis=1)[:, 1]
    ok = sel & ~stars["saturated"] & (stars["flux_template"] > 2e3) & (nearest > 15)
    ok &= (stars["x_template"] > x0 + 20) & (stars["x_template"] < x0 + p.shape[1] - 20)
    ok &= (stars["y_template"] > y0 + 20) & (stars["y_template"] < y0 + p.shape[0] - 20)
    i = np.flatnonzero(ok)[np.argmax(stars["flux_template"][ok])]
    ic, jc = round(stars["x_template"][i] - x0), round(stars["y_template"][i] - y0)
    _, cx, cy, _ = _moments(tmpl.image[jc - 5 : jc + 6, ic - 5 : ic + 6].astype(float))
    assert cx + ic - 5 + x0 == pytest.approx(stars["x_template"][i], abs=0.02)
    assert cy + jc - 5 + y0 == pytest.approx(stars["y_template"][i], abs=0.02)
    # zero offset: identical WCS
    flat = make_pair(SimulationParams(shape=(128, 128)))
    assert np.allclose(flat.template.wcs.wcs.cd, flat.science.wcs.wcs.cd)
    assert np.allclose(flat.template.wcs.wcs.crpix, flat.science.wcs.wcs.crpix)


# ---------------------------------------------------------------- serialisation
def test_truth_round_trip(pair):
    truth = pair.truth
    data = json.loads(json.dumps(truth.to_dict()))
    back = Truth.from_dict(data, catalogues=truth.catalogues)
    assert back.params == truth.params
    k = truth.kernel
    for x, y in [(k.centre[0], k.centre[1]), (1000.0, 2000.0), (1511.0, 2511.0), (1100.5, 2400.25)]:
        assert np.array_equal(back.kernel.kernel_at(x, y), k.kernel_at(x, y))
    np.testing.assert_array_equal(back.background_at(1200.0, 2300.0),
                                  truth.background_at(1200.0, 2300.0))
    assert back.bad_column == truth.bad_column


def test_source_table(pair):
    columns, units = source_table(pair.truth)
    cats = pair.truth.catalogues
    n = sum(cats[k]["x"].size for k in ("stars", "galaxies", "transients", "variables"))
    assert all(v.shape == (n,) for v in columns.values())
    assert set(units) <= set(columns)
    tr = columns["kind"] == "transient"
    assert tr.sum() == cats["transients"]["x"].size
    np.testing.assert_array_equal(columns["flux_difference"][tr],
                                  cats["transients"]["flux_science"])
    var = columns["kind"] == "variable"
    np.testing.assert_allclose(columns["flux_difference"][var],
                               cats["variables"]["flux_difference"])
    np.testing.assert_array_equal(columns["in_frame"][columns["kind"] == "star"],
                                  cats["stars"]["in_frame"])


def test_kernel_sigmas_no_gradient():
    p = SimulationParams(kernel_width_gradient=0.0)
    s1, s2 = kernel_sigmas(p)
    assert s1 == pytest.approx(s2)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("shape", (10, 10)),
        ("shape", (512.5, 512)),
        ("seed", -1),
        ("template_fwhm", 0.0),
        ("science_fwhm", 2.0),
        ("kernel_size", 30),
        ("kernel_size", 7),
        ("kernel_width_gradient", 1.5),
        ("flux_max", 10.0),
        ("flux_power_index", -0.5),
        ("saturation", 50.0),
        ("bad_column", 5000),
        ("background", (1.0, 2.0)),
        ("template_offset", (0.0, 0.0, 45.0)),
        ("gain", float("nan")),
        ("n_cosmic_rays", 1.5),
    ],
)
def test_validation_names_field_and_value(field, value):
    with pytest.raises(ConfigError, match=field) as info:
        SimulationParams(**{field: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)
    assert isinstance(info.value, ValueError)
