"""Tests of psfmatch.register: registration of two exposures by their stars, without WCS.

The simulated pairs come from :func:`psfmatch.synth.make_pair` with ``template_offset``
``(dx, dy, rot)``: the template is *rendered* (not resampled) so that the template parent
position of a science parent position ``s`` is exactly ``c + R(rot) (s - c) + (dx, dy)``,
``c`` the image centre. Their WCSs are dropped before registering.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from psfmatch.errors import ConfigError, PsfMatchError
from psfmatch.exposure import Exposure
from psfmatch.register import (
    AffineTransform,
    RegistrationError,
    RegistrationOptions,
    find_sources,
    fit_affine,
    match_sources,
    register_exposures,
)
from psfmatch.synth import SimulationParams, make_pair

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
TWOMASS = REAL / "twomass_m17_ks"


# --------------------------------------------------------------------------- helpers
def simulate(shape, offset, *, seed, template_fwhm=3.0, science_fwhm=4.5, density=3000.0,
             xy0=(0, 0)):
    """A pair without WCS and its true science -> template transform."""
    params = SimulationParams(shape=shape, template_offset=offset, seed=seed, xy0=xy0,
                              template_fwhm=template_fwhm, science_fwhm=science_fwhm,
                              star_density=density)
    pair = make_pair(params)
    ny, nx = shape
    centre = np.array([xy0[0] + (nx - 1) / 2.0, xy0[1] + (ny - 1) / 2.0])
    t = math.radians(offset[2])
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    truth = AffineTransform(rot, centre + np.asarray(offset[:2]) - rot @ centre)
    return pair.science.with_(wcs=None), pair.template.with_(wcs=None), truth


def corners(exposure):
    """Parent coordinates of the centres of the four corner pixels."""
    x0, y0, x1, y1 = exposure.bbox
    return np.array([x0, x1, x0, x1], float), np.array([y0, y0, y1, y1], float)


def corner_errors(found, truth, exposure):
    """Distance (template px) between the two transforms at the image corners, and the
    2-D formal 1-sigma error of ``found`` there."""
    x, y = corners(exposure)
    fx, fy = found(x, y)
    tx, ty = truth(x, y)
    return np.hypot(fx - tx, fy - ty), math.sqrt(2.0) * found.position_error(x, y)


def rotate90(exposure: Exposure) -> Exposure:
    """The exposure rotated by 90 degrees counter-clockwise (numpy ``rot90``), no WCS."""
    return Exposure(image=np.rot90(exposure.image).copy(), mask=np.rot90(exposure.mask).copy(),
                    variance=np.rot90(exposure.variance).copy(),
                    mask_planes=exposure.mask_planes)


@pytest.fixture(scope="module")
def issue_pair():
    """The pair of the issue: offset (-22.4, 48.7) px, rotated 0.3 deg, parent origin
    (37, 15)."""
    return simulate((1024, 1024), (-22.4, 48.7, 0.3), seed=11, xy0=(37, 15))


@pytest.fixture(scope="module")
def small_pair():
    return simulate((512, 512), (0.0, 0.0, 0.0), seed=5)


# --------------------------------------------------------------------------- accuracy
def test_recovers_offset_and_rotation_at_corners(issue_pair):
    science, template, truth = issue_pair
    found = register_exposures(science, template)
    err, formal = corner_errors(found, truth, science)
    # Required accuracy, and consistent with the fit's own uncertainty: each corner's
    # 2-D error is a draw of scale `formal`, so 4 formal sigmas bound it (the corner
    # errors are correlated; P(> 4 sigma) ~ 3e-4 for one 2-D Gaussian).
    assert np.all(err < 0.05), err
    assert np.all(err < 4.0 * formal), (err, formal)
    assert found.n_matches >= 100
    assert found.rotation_deg == pytest.approx(0.3, abs=2e-3)
    assert found.scale == pytest.approx(1.0, abs=1e-4)
    # weighted rms of the pairs: centroid noise of the bright stars (~0.05 px per axis)
    assert found.rms < 0.2
    # the pairs are real: each matched science star lands on its template star
    tx, ty = truth(*found.science_xy.T)
    assert np.median(np.hypot(tx - found.template_xy[:, 0], ty - found.template_xy[:, 1])) < 0.3


@pytest.mark.parametrize(
    ("offset", "fwhm", "swap"),
    [
        pytest.param((100.0, -100.0, 0.3), (3.0, 4.5), False, id="shift-100px"),
        pytest.param((-30.0, 20.0, 3.0), (3.0, 4.5), False, id="rotation-3deg"),
        pytest.param((-22.4, 48.7, 0.3), (2.5, 5.0), False, id="seeing-ratio-2"),
        # sharp science, blurred template: the simulated roles swapped
        pytest.param((100.0, 100.0, 3.0), (2.5, 5.0), True, id="all-three-swapped"),
    ],
)
def test_robust_to_shift_rotation_and_seeing(offset, fwhm, swap):
    science, template, truth = simulate((512, 512), offset, seed=23, template_fwhm=fwhm[0],
                                        science_fwhm=fwhm[1])
    if swap:
        science, template, truth = template, science, truth.inverse()
    found = register_exposures(science, template)
    err, formal = corner_errors(found, truth, science)
    # fewer stars on a 512^2 grid: the formal error sets the tolerance (see above); with
    # 50-100 matched stars it is 0.04-0.11 px at the corners
    assert np.all(err < 4.0 * formal), (err, formal)
    assert np.all(formal < 0.15)
    assert found.rotation_deg == pytest.approx(-offset[2] if swap else offset[2], abs=0.02)


def test_centroid_errors_match_the_scatter():
    # Stars with a known position: (measured - true) / error should be a unit Gaussian
    # for stars without a visible neighbour (flux > 300 ADU) within 15 px. No galaxies,
    # which would be neighbours the truth catalogue of stars does not list.
    params = SimulationParams(shape=(1024, 1024), seed=12, galaxy_density=0.0)
    pair = make_pair(params)
    stars = pair.truth.catalogues["stars"]
    true_xy = np.column_stack([stars["x"], stars["y"]])
    visible = cKDTree(true_xy[stars["flux_template"] > 300.0])
    for exposure in (pair.template, pair.science):
        src = find_sources(exposure)
        xy = np.column_stack([src["x"], src["y"]])
        dist, idx = cKDTree(true_xy).query(xy)
        near, _ = visible.query(xy, 2)
        isolated = (dist < 1.0) & (near[:, 1] > 15.0)
        assert isolated.sum() > 80
        chi = ((xy[isolated] - true_xy[idx[isolated]]) / src["error"][isolated, None]).ravel()
        # n >= 160 values: the std of a unit Gaussian sample is 1 +- 0.06; allow about
        # 3 sigma plus 10 % for the linearised error model
        assert 0.8 < np.std(chi) < 1.3
        assert abs(np.mean(chi)) < 0.25


# --------------------------------------------------------------------------- failures
def test_no_common_stars_raise_with_numbers(small_pair):
    science, _, _ = small_pair
    _, other, _ = simulate((512, 512), (0.0, 0.0, 0.0), seed=6)
    with pytest.raises(RegistrationError) as info:
        register_exposures(science, other, label="pair p7")
    err = info.value
    assert isinstance(err, PsfMatchError)
    assert err.n_matches < err.min_matches
    assert err.n_science > 50
    assert err.n_template > 50
    msg = str(err)
    assert "pair p7" in msg
    assert f"{err.n_matches} matched sources (need >= {err.min_matches})" in msg
    assert f"{err.n_science} science and {err.n_template} template sources" in msg
    # the numbers survive pickling (multiprocessing, Snakemake)
    again = pickle.loads(pickle.dumps(err))
    assert (again.n_matches, again.min_matches, str(again)) == (err.n_matches,
                                                                err.min_matches, msg)
    # a step's `raise type(err)(f"{label}: {err}")` keeps the text
    assert str(type(err)(f"pair p7: {err}")) == f"pair p7: {msg}"


def test_rotated_90_degrees_registers_exactly(small_pair):
    # Decision: any rotation registers (triangle invariants do not depend on it). The
    # same pixels rotated by numpy.rot90: template (x, y) = (y_s, nx - 1 - x_s).
    science, _, _ = small_pair
    found = register_exposures(science, rotate90(science))
    nx = science.shape[1]
    np.testing.assert_allclose(found.matrix, [[0.0, 1.0], [-1.0, 0.0]], atol=1e-9)
    np.testing.assert_allclose(found.offset, [0.0, nx - 1.0], atol=1e-6)
    assert found.rms < 1e-6  # identical centroids
    assert found.rotation_deg == pytest.approx(-90.0)


def test_mirrored_image_needs_allow_reflection(small_pair):
    science, _, _ = small_pair
    mirrored = Exposure(image=science.image[:, ::-1].copy(), mask=science.mask[:, ::-1].copy(),
                        variance=science.variance[:, ::-1].copy())
    with pytest.raises(RegistrationError):
        register_exposures(science, mirrored)
    found = register_exposures(science, mirrored,
                               options=RegistrationOptions(allow_reflection=True))
    nx = science.shape[1]
    np.testing.assert_allclose(found.matrix, [[-1.0, 0.0], [0.0, 1.0]], atol=1e-9)
    np.testing.assert_allclose(found.offset, [nx - 1.0, 0.0], atol=1e-6)


def test_blank_image_has_too_few_sources(small_pair):
    science, _, _ = small_pair
    rng = np.random.default_rng(3)
    blank = science.with_(image=rng.normal(0.0, 1.0, science.shape).astype(np.float32),
                          variance=np.ones(science.shape, np.float32),
                          mask=np.zeros(science.shape, np.int32))
    with pytest.raises(RegistrationError, match="too few sources") as info:
        register_exposures(science, blank)
    assert info.value.n_template < 6


# --------------------------------------------------------------------------- arrays only
def _point_lists(rng, n=300, size=2000.0):
    """Random points, a known affine transform (shear and anisotropic scale included),
    20 % of each list replaced by unrelated points."""
    s = rng.uniform(0, size, (n, 2))
    matrix = np.array([[0.999, -0.03], [0.031, 1.002]])
    offset = np.array([-87.3, 142.9])
    t = s @ matrix.T + offset
    s[: n // 5] = rng.uniform(0, size, (n // 5, 2))
    t[n - n // 5:] = rng.uniform(0, size, (n // 5, 2))
    order = rng.permutation(n)
    return s, t[order], AffineTransform(matrix, offset)


def test_match_sources_recovers_an_exact_affine_transform():
    rng = np.random.default_rng(8)
    s, t, truth = _point_lists(rng)
    found = match_sources(s, t)
    np.testing.assert_allclose(found.matrix, truth.matrix, atol=1e-10)
    np.testing.assert_allclose(found.offset, truth.offset, atol=1e-7)
    assert found.n_matches == 180  # the 60 % of points present in both lists
    assert found.rms < 1e-8


def test_match_sources_rms_limit():
    # Positions scattered by 0.7 px per axis: weighted rms ~ 0.7 sqrt(2) ~ 1 px > 0.5.
    rng = np.random.default_rng(9)
    s, t, _ = _point_lists(rng)
    t = t + rng.normal(0.0, 0.7, t.shape)
    with pytest.raises(RegistrationError, match="scatter too much") as info:
        match_sources(s, t, label="noisy")
    assert info.value.rms > info.value.max_rms == 0.5
    loose = match_sources(s, t, options=RegistrationOptions(max_rms=2.0))
    assert 0.7 < loose.rms < 1.3


def test_fit_affine_weighted_least_squares():
    rng = np.random.default_rng(4)
    s = rng.uniform(-50, 50, (40, 2))
    t = s @ np.array([[1.1, 0.2], [-0.1, 0.9]]).T + [3.0, -4.0]
    t[0] += 100.0  # an outlier with zero weight changes nothing
    w = np.ones(40)
    w[0] = 0.0
    matrix, offset = fit_affine(s, t, w)
    np.testing.assert_allclose(matrix, [[1.1, 0.2], [-0.1, 0.9]], atol=1e-12)
    np.testing.assert_allclose(offset, [3.0, -4.0], atol=1e-12)


def test_affine_transform_inverse_and_record():
    tr = AffineTransform([[0.9, -0.2], [0.25, 1.05]], [10.0, -3.0], n_matches=12, rms=0.1)
    x, y = np.array([0.0, 100.0, -7.5]), np.array([5.0, -40.0, 1e3])
    np.testing.assert_allclose(tr.inverse()(*tr(x, y)), (x, y), atol=1e-9)
    record = json.loads(json.dumps(tr.to_dict()))
    assert record["matrix"] == [[0.9, -0.2], [0.25, 1.05]]
    assert record["n_matches"] == 12
    assert record["rms_pix"] == 0.1
    with pytest.raises(ValueError, match="read-only"):
        tr.matrix[0, 0] = 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("min_matches", 2), ("max_rms", 0.0), ("scale_range", (1.2, 2.0)),
     ("n_neighbours", 1), ("n_asterism_sources", 2), ("stamp_half_width", 2)],
)
def test_options_are_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        RegistrationOptions(**{field: value})


# --------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_twomass_pair_agrees_with_its_wcs():
    """Two 2MASS Ks atlas tiles overlapping by a 16 % strip (offset ~ (430, 207) px):
    registered by their stars, the transform agrees with the WCS mapping."""
    if not TWOMASS.is_dir():
        pytest.skip(f"real data folder {TWOMASS} is absent")
    from psfmatch.io import read_exposure
    from psfmatch.warp import WcsTransform

    # no variance map: any gain gives the relative weights (the atlas noise is ~5-13 DN)
    a = read_exposure(TWOMASS / "aK_asky_990502s1350080.fits.gz", gain=10.0)
    b = read_exposure(TWOMASS / "aK_asky_990502s1420198.fits.gz", gain=10.0)
    found = register_exposures(a.with_(wcs=None), b.with_(wcs=None), label="2MASS M17")
    via_sky = WcsTransform(a.wcs, b.wcs)  # array pixels; xy0 = (0, 0) for both
    # compare over the science pixels that land in the template (the overlap strip)
    yy, xx = np.mgrid[0 : a.shape[0] : 8, 0 : a.shape[1] : 8].astype(float)
    wx, wy = via_sky(xx, yy)
    inside = (wx >= 0) & (wx <= b.shape[1] - 1) & (wy >= 0) & (wy <= b.shape[0] - 1)
    fx, fy = found(xx[inside], yy[inside])
    d = np.hypot(fx - wx[inside], fy - wy[inside])
    assert found.n_matches >= 15
    # The WCS itself fits the matched stars with 0.115 px rms (the transform: 0.09 px);
    # with ~20 stars in a 80 px wide strip the two mappings differ by about that much.
    assert np.median(d) < 0.15
    assert d.max() < 0.3
