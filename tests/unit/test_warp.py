"""Tests of psfmatch.warp: resampling a template onto the science pixel grid.

All data are synthetic: point-sampled circular Gaussians rendered analytically on TAN
grids that share a tangent point, so the template -> science pixel map is exactly affine
(a rotation plus a sub-pixel shift) and the truth on the science grid is known.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from astropy.wcs import WCS

from psfmatch.errors import PsfMatchError
from psfmatch.exposure import DEFAULT_MASK_PLANES, Exposure
from psfmatch.warp import WarpError, warp_exposure

SCALE_DEG = 0.2 / 3600.0  # 0.2 arcsec / pixel
CRVAL = (150.0, 2.0)


def tan_wcs(shape, *, shift=(0.0, 0.0), rot_deg=0.0, scale=SCALE_DEG, crval=CRVAL):
    """TAN WCS whose tangent point sits at the array centre + ``shift`` (pixels).

    Two such WCSs with equal ``scale`` and ``crval`` map a science pixel ``p`` to the
    template pixel ``R (p - c_s) + c_t + shift`` exactly (same tangent point).
    """
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [(nx - 1) / 2 + 1 + shift[0], (ny - 1) / 2 + 1 + shift[1]]
    t = np.deg2rad(rot_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    w.wcs.cd = scale * np.diag([-1.0, 1.0]) @ rot
    w.pixel_shape = (nx, ny)
    return w


def render(shape, wcs, frame_wcs, stars, sky=0.0):
    """Point-sample Gaussians ``(x, y, amp, sigma)`` given in ``frame_wcs`` pixels."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx].astype(np.float64)
    lon, lat = wcs.all_pix2world(x, y, 0)
    fx, fy = frame_wcs.all_world2pix(lon, lat, 0)
    img = np.full(shape, sky, dtype=np.float64)
    for sx, sy, amp, sig in stars:
        img += amp * np.exp(-((fx - sx) ** 2 + (fy - sy) ** 2) / (2 * sig * sig))
    return img


def make_exposure(image, wcs, *, variance=1.0, mask=None, **kw):
    image = np.asarray(image, dtype=np.float32)
    var = np.broadcast_to(np.float32(variance), image.shape).copy()
    mask = np.zeros(image.shape, np.int32) if mask is None else mask
    return Exposure(image=image, mask=mask, variance=var, wcs=wcs, **kw)


def lanczos_weights(frac, n):
    """Independent reference: normalised Lanczos-n taps k = -(n-1)..n at offset frac."""
    k = np.arange(1 - n, n + 1)
    x = frac - k
    w = np.sinc(x) * np.sinc(x / n)
    return w / w.sum()


def lanczos_1d_error(n, sigma):
    """Worst 1-D interpolation error of a unit Gaussian (any centre, any offset)."""
    worst = 0.0
    k = np.arange(1 - n, n + 1)
    for c in np.linspace(0.0, 1.0, 21):
        for f in np.linspace(0.0, 1.0, 21):
            g = np.exp(-((k - c) ** 2) / (2 * sigma**2))
            truth = np.exp(-((f - c) ** 2) / (2 * sigma**2))
            worst = max(worst, abs(lanczos_weights(f, n) @ g - truth))
    return worst


def plane(exp, name):
    return (exp.mask & (1 << exp.mask_planes[name])) != 0


SCI_SHAPE = (96, 96)
SCI_WCS = tan_wcs(SCI_SHAPE)
# 4 x 4 grid of sigma = 2 px stars (the worst sampling the pipeline meets), 20 px apart
# so each pixel's error is dominated by a single star.
STARS = [(18.3 + 20 * i, 17.6 + 20 * j, 1000.0, 2.0) for i in range(4) for j in range(4)]


@pytest.fixture(scope="module")
def rotated_pair():
    """Template 120^2 rotated by 3 deg and shifted by (0.37, -0.21) px; covers the science."""
    tshape = (120, 120)
    twcs = tan_wcs(tshape, shift=(0.37, -0.21), rot_deg=3.0)
    timg = render(tshape, twcs, SCI_WCS, STARS, sky=50.0)
    truth = render(SCI_SHAPE, SCI_WCS, SCI_WCS, STARS, sky=50.0)
    return make_exposure(timg, twcs, variance=4.0), truth


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("kernel,order", [("lanczos3", 3), ("lanczos4", 4), ("lanczos5", 5)])
def test_lanczos_reproduces_analytic_field(rotated_pair, kernel, order):
    template, truth = rotated_pair
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, kernel=kernel)
    assert info["resampled"] is True
    assert info["coverage_fraction"] == 1.0
    assert np.isfinite(out.image).all()
    # The kernel is separable and so is a circular Gaussian, so the interpolant of one
    # star is (g(x) + e_x)(g(y) + e_y) and |error| <= A (2 e + e^2), with e the worst
    # 1-D error of a unit Gaussian (lanczos3, sigma 2: e = 2.5e-3 -> bound 5.0e-3 A;
    # measured 2.9e-3 A). The constant sky is reproduced exactly (unit-sum kernel); the
    # map is affine, so the interp_length = 10 WCS interpolation is exact; float32
    # rounding adds ~1e-7. 10 % margin on top.
    e = lanczos_1d_error(order, 2.0)
    bound = 1.1 * 1000.0 * (2 * e + e * e)
    err = np.abs(out.image - truth).max()
    assert err <= bound, (err, bound)
    assert err > 1e-2 * bound  # the comparison is not vacuous
    # geometry metadata
    assert out.wcs is SCI_WCS and out.xy0 == (0, 0) and out.shape == SCI_SHAPE
    assert info["relative_area_min"] == pytest.approx(1.0, abs=1e-6)
    assert info["relative_area_max"] == pytest.approx(1.0, abs=1e-6)
    json.dumps(info)  # the health sidecar must be JSON-serialisable


def test_bilinear_is_worse_but_close(rotated_pair):
    template, truth = rotated_pair
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, kernel="bilinear")
    # linear interpolation error <= f''/8 per axis = A / (8 sigma^2) = 0.031 A for sigma 2
    err = np.abs(out.image - truth).max()
    assert 5e-3 * 1000 < err <= 2 * 1000 / (8 * 2.0**2) * 1.1
    assert info["kernel"] == "bilinear"


def test_interp_length_matches_exact_transform():
    # different tangent points: the pixel map is not affine, interpolation is approximate
    tshape = (120, 120)
    twcs = tan_wcs(tshape, shift=(0.37, -0.21), rot_deg=3.0, crval=(150.01, 2.02))
    template = make_exposure(render(tshape, twcs, SCI_WCS, STARS), twcs)
    # science tangent point 0.01 deg E, 0.02 deg S of the template's: centres ~coincide
    sci_wcs = tan_wcs(SCI_SHAPE, shift=(180.0 * np.cos(np.deg2rad(2.0)), -360.0))
    a, info_a = warp_exposure(template, wcs=sci_wcs, shape=SCI_SHAPE, interp_length=10)
    b, info_b = warp_exposure(template, wcs=sci_wcs, shape=SCI_SHAPE, interp_length=0)
    assert info_a["coverage_fraction"] == info_b["coverage_fraction"] > 0
    ok = ~plane(a, "NO_DATA")
    # position error of bilinear WCS interpolation ~ L^2/8 * |d2x/dp2| << 1e-4 px, so the
    # image difference is below 1e-4 px * max gradient (~300 / px)
    assert np.abs(a.image[ok] - b.image[ok]).max() < 0.03


# ------------------------------------------------------------------ pass-through
def test_identical_grid_passes_through_bitwise():
    rng = np.random.default_rng(1)
    img = rng.normal(size=SCI_SHAPE).astype(np.float32)
    mask = (rng.random(SCI_SHAPE) < 0.01).astype(np.int32) << DEFAULT_MASK_PLANES["CR"]
    template = make_exposure(img, tan_wcs(SCI_SHAPE), variance=2.5, mask=mask,
                             metadata={"FILTER": "r"}, xy0=(5, 7))
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, xy0=(100, 200))
    assert info["resampled"] is False
    assert info["max_grid_offset_pix"] < 1e-6
    assert info["coverage_fraction"] == 1.0
    assert np.array_equal(out.image, template.image)
    assert np.array_equal(out.variance, template.variance)
    assert np.array_equal(out.mask, template.mask)
    assert not np.shares_memory(out.image, template.image)
    assert out.xy0 == (100, 200) and out.metadata == {"FILTER": "r"}
    assert out.mask_planes == template.mask_planes


def test_integer_offset_larger_template_is_cropped():
    rng = np.random.default_rng(2)
    tshape = (130, 140)
    # template pixel = science pixel + (7, 11) (+ the centre difference, integer here)
    twcs = tan_wcs(tshape, shift=(7.0 - (140 - 96) / 2, 11.0 - (130 - 96) / 2))
    img = rng.normal(size=tshape).astype(np.float32)
    template = make_exposure(img, twcs, variance=rng.random(tshape) + 1)
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    assert info["resampled"] is False
    assert info["integer_offset"] == [7, 11]
    assert np.array_equal(out.image, img[11:107, 7:103])
    assert np.array_equal(out.variance, template.variance[11:107, 7:103])


def test_tiny_offset_within_tolerance_passes_through():
    twcs = tan_wcs(SCI_SHAPE, shift=(0.004, -0.003))
    template = make_exposure(np.arange(96 * 96.0).reshape(SCI_SHAPE), twcs)
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    assert info["resampled"] is False and info["max_grid_offset_pix"] == pytest.approx(0.005)
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, same_grid_tolerance=0.001)
    assert info["resampled"] is True


# ------------------------------------------------------------------ flux and variance
def test_flux_conserved_over_star_region(rotated_pair):
    template, _ = rotated_pair
    out, _ = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    y, x = np.mgrid[: SCI_SHAPE[0], : SCI_SHAPE[1]]
    for sx, sy, amp, sig in STARS[:4]:
        region = (x - sx) ** 2 + (y - sy) ** 2 <= 9.0**2  # 4.5 sigma
        flux = (out.image[region] - 50.0).sum()
        # point-sampled sigma = 2 Gaussian: pixel sum = 2 pi sigma^2 A to ~1e-17,
        # minus the 4.5-sigma aperture loss exp(-r^2 / 2 sigma^2) = 4e-5
        expected = 2 * np.pi * sig**2 * amp * (1 - np.exp(-(9.0**2) / (2 * sig**2)))
        assert flux == pytest.approx(expected, rel=1e-3)


def test_flux_conserved_with_different_pixel_scale():
    # science pixels 1.25x larger: relative area 1.5625 template pixels per science pixel
    tshape = (150, 150)
    twcs = tan_wcs(tshape, shift=(0.3, 0.1), rot_deg=2.0)
    sci_wcs = tan_wcs(SCI_SHAPE, scale=1.25 * SCALE_DEG)
    stars = [(30.2, 40.7, 500.0, 2.5), (65.4, 55.1, 800.0, 2.5)]  # sigma in template px
    timg = render(tshape, twcs, twcs, [(75 + 1.25 * (s[0] - 47.5), 75 + 1.25 * (s[1] - 47.5),
                                        s[2], s[3]) for s in stars])
    template = make_exposure(timg, twcs)
    out, info = warp_exposure(template, wcs=sci_wcs, shape=SCI_SHAPE)
    assert info["relative_area_min"] == pytest.approx(1.5625, rel=1e-6)
    assert info["relative_area_max"] == pytest.approx(1.5625, rel=1e-6)
    # total flux (counts) is preserved although each star covers 1.56x fewer pixels
    assert out.image.sum() == pytest.approx(timg.sum(), rel=1e-3)


def test_variance_half_pixel_shift():
    v = 4.0
    # template = science + (0.5, 0.25): offsets away from integers, so the footprint
    # bookkeeping below does not depend on round-off in the WCS round trip
    twcs = tan_wcs(SCI_SHAPE, shift=(0.5, 0.25))
    template = make_exposure(np.zeros(SCI_SHAPE), twcs, variance=v)
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    assert info["resampled"] is True
    ok = ~plane(out, "NO_DATA")
    # V_out = V sum_kl (w^x_k w^y_l)^2 = V (sum w^x^2)(sum w^y^2)
    sx = np.sum(lanczos_weights(0.5, 3) ** 2)
    sy = np.sum(lanczos_weights(0.25, 3) ** 2)
    assert sx == pytest.approx(0.786, abs=1e-3)  # a half-pixel shift: about 0.79 V
    expected = v * sx * sy
    np.testing.assert_allclose(out.variance[ok], expected, rtol=1e-5)
    assert (out.variance[ok] < v).all()
    # footprint i0-2 .. i0+3 inside 0..95 with i0 = x (resp. y): x, y in 2 .. 92
    assert ok.sum() == 91 * 91 and ok[2:93, 2:93].all()
    # pure half-pixel shift in x only (y offset 0 -> weight 1 on one row): V sum w_x^2
    t1 = template.with_(wcs=tan_wcs(SCI_SHAPE, shift=(0.5, 0.0)))
    out1, _ = warp_exposure(t1, wcs=SCI_WCS, shape=SCI_SHAPE)
    ok1 = ~plane(out1, "NO_DATA")
    np.testing.assert_allclose(out1.variance[ok1], v * sx, rtol=1e-5)


# ------------------------------------------------------------------ masks
def test_mask_bad_bilinear_edge_full_footprint():
    planes = DEFAULT_MASK_PLANES
    mask = np.zeros(SCI_SHAPE, np.int32)
    mask[40, 30] |= 1 << planes["BAD"]
    mask[60, 70] |= 1 << planes["EDGE"]
    twcs = tan_wcs(SCI_SHAPE, shift=(0.5, 0.5))  # template = science + (0.5, 0.5)
    template = make_exposure(np.ones(SCI_SHAPE), twcs, mask=mask)
    out, _ = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    bad = np.argwhere(plane(out, "BAD"))
    # bilinear taps i0, i0+1 with i0 = x: pixel 30 is hit by x = 29, 30 (same in y)
    assert sorted(map(tuple, bad)) == [(39, 29), (39, 30), (40, 29), (40, 30)]
    edge = plane(out, "EDGE")
    # lanczos3 taps i0-2 .. i0+3: pixel 70 is hit by x = 67 .. 72 -> 6 x 6 pixels
    assert edge.sum() == 36
    assert edge[57:63, 67:73].all()
    assert not plane(out, "EDGE")[plane(out, "BAD")].any()
    # mask_kernel "" = the image kernel: BAD grows over 6 x 6 as well
    out2, _ = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, mask_kernel="")
    assert plane(out2, "BAD").sum() == 36
    # growFullMask off: EDGE propagates with the bilinear footprint only
    out3, _ = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, grow_full_mask=())
    assert plane(out3, "EDGE").sum() == 4


def test_partial_coverage_no_data_and_fraction():
    # template = science + (40.3, 0.4) on a template of the same size: only part covered
    twcs = tan_wcs(SCI_SHAPE, shift=(40.3, 0.4))
    planes = {k: v for k, v in DEFAULT_MASK_PLANES.items() if k != "NO_DATA"}
    template = Exposure(image=np.ones(SCI_SHAPE, np.float32), mask=np.zeros(SCI_SHAPE, np.int32),
                        variance=np.ones(SCI_SHAPE, np.float32), mask_planes=planes, wcs=twcs)
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    assert "NO_DATA" in out.mask_planes and "NO_DATA" not in template.mask_planes
    # i0 = floor(x + 40.3) must satisfy 2 <= i0 and i0 + 3 <= 95  ->  x <= 52 (53 columns)
    # j0 = floor(y + 0.4) = y must satisfy 2 <= y <= 92          ->  91 rows
    cols, rows = 53, 91
    nod = plane(out, "NO_DATA")
    good = np.zeros(SCI_SHAPE, bool)
    good[2:93, :53] = True
    assert np.array_equal(~nod, good)
    assert info["coverage_fraction"] == pytest.approx(cols * rows / 96**2)
    assert np.isnan(out.image[nod]).all() and np.isposinf(out.variance[nod]).all()
    np.testing.assert_allclose(out.image[good], 1.0, rtol=1e-6)  # constant reproduced


def test_nan_and_no_data_template_pixels_propagate():
    img = np.ones(SCI_SHAPE, np.float32)
    img[50, 50] = np.nan
    mask = np.zeros(SCI_SHAPE, np.int32)
    mask[20, 20] = 1 << DEFAULT_MASK_PLANES["NO_DATA"]
    twcs = tan_wcs(SCI_SHAPE, shift=(0.5, 0.5))
    template = make_exposure(img, twcs, mask=mask)
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    nod = plane(out, "NO_DATA")
    assert nod[47:53, 47:53].all() and nod[17:23, 17:23].all()
    assert np.isnan(out.image[nod]).all()
    assert np.isfinite(out.image[~nod]).all()
    # 5 border rows/columns + two 6 x 6 blocks
    assert (~nod).sum() == (96 - 5) ** 2 - 2 * 36
    assert info["coverage_fraction"] == pytest.approx(((96 - 5) ** 2 - 72) / 96**2)


# ------------------------------------------------------------------ errors and safety
def test_no_overlap_raises():
    twcs = tan_wcs(SCI_SHAPE, crval=(150.5, 2.0))
    template = make_exposure(np.ones(SCI_SHAPE), twcs)
    with pytest.raises(WarpError, match="do not overlap") as exc:
        warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    assert "150.5" in str(exc.value)  # the sky boxes are named
    assert isinstance(exc.value, PsfMatchError) and isinstance(exc.value, ValueError)
    # overlapping, but smaller than one lanczos3 footprint
    tiny = make_exposure(np.ones((4, 4)), tan_wcs((4, 4), shift=(0.3, 0.2)))
    with pytest.raises(WarpError, match="no science pixel has a complete lanczos3"):
        warp_exposure(tiny, wcs=SCI_WCS, shape=SCI_SHAPE)


def test_missing_or_non_celestial_wcs_raises(caplog):
    template = make_exposure(np.ones(SCI_SHAPE), None)
    with pytest.raises(WarpError, match="template has no WCS"):
        warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    with pytest.raises(WarpError, match="science has no WCS"):
        warp_exposure(make_exposure(np.ones(SCI_SHAPE), SCI_WCS), wcs=None, shape=SCI_SHAPE)
    with pytest.raises(WarpError, match="no WCS"):
        warp_exposure(template, wcs=None, shape=(50, 50))
    linear = WCS(naxis=2)
    linear.wcs.ctype = ["LINEAR", "LINEAR"]
    with pytest.raises(WarpError, match="not a 2-axis celestial WCS"):
        warp_exposure(make_exposure(np.ones(SCI_SHAPE), linear), wcs=SCI_WCS, shape=SCI_SHAPE)
    # both None, same shape: passed through with a warning
    with caplog.at_level(logging.WARNING, logger="psfmatch.warp"):
        out, info = warp_exposure(template, wcs=None, shape=SCI_SHAPE)
    assert info["resampled"] is False
    assert np.array_equal(out.image, template.image)
    assert any("no WCS" in r.getMessage() for r in caplog.records)


def test_bad_arguments_raise():
    template = make_exposure(np.ones(SCI_SHAPE), SCI_WCS)
    with pytest.raises(WarpError, match="unknown warping kernel 'cubic'"):
        warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, kernel="cubic")
    with pytest.raises(WarpError, match="unknown mask warping kernel"):
        warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, mask_kernel="nearest")
    with pytest.raises(WarpError, match="larger than warping kernel"):
        warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, kernel="bilinear",
                      mask_kernel="lanczos3")
    with pytest.raises(WarpError, match="interp_length"):
        warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE, interp_length=-1)


def test_input_not_modified(rotated_pair):
    template, _ = rotated_pair
    rng = np.random.default_rng(5)
    mask = (rng.random(template.shape) < 0.02).astype(np.int32) << DEFAULT_MASK_PLANES["EDGE"]
    image = template.image.copy()
    image[10, 10] = np.nan
    t = template.with_(image=image, mask=mask)
    copies = {k: getattr(t, k).copy() for k in ("image", "mask", "variance")}
    for k in copies:
        getattr(t, k).flags.writeable = False
    planes = dict(t.mask_planes)
    for kernel in ("lanczos3", "bilinear"):
        out, _ = warp_exposure(t, wcs=SCI_WCS, shape=SCI_SHAPE, kernel=kernel)
        assert out.image.flags.writeable
    for k, v in copies.items():
        np.testing.assert_array_equal(getattr(t, k), v)
    assert t.mask_planes == planes


def test_different_celestial_frames_are_converted():
    # same CRVAL numbers, but the template's are FK5 J2000: a ~25 mas frame offset,
    # i.e. ~0.14 px at 0.2 arcsec/px, which the warp must apply
    from astropy.coordinates import SkyCoord

    twcs = tan_wcs(SCI_SHAPE)
    twcs.wcs.radesys = "FK5"
    twcs.wcs.equinox = 2000.0
    template = make_exposure(np.ones(SCI_SHAPE), twcs)
    out, info = warp_exposure(template, wcs=SCI_WCS, shape=SCI_SHAPE)
    fk5 = SkyCoord(*CRVAL, unit="deg", frame="icrs").transform_to("fk5")
    dx = (fk5.ra.deg - CRVAL[0]) * np.cos(np.deg2rad(CRVAL[1])) / SCALE_DEG
    dy = (fk5.dec.deg - CRVAL[1]) / SCALE_DEG
    assert info["resampled"] is True
    assert info["max_grid_offset_pix"] == pytest.approx(np.hypot(dx, dy), rel=1e-3)
