"""A raw pair as it comes off a camera: unsigned 16-bit, no WCS, offset and rotated.

The simulated pair (:func:`psfmatch.synth.make_pair`) is written the way a CCD frame is
stored: sky added back, rounded to integers and saved as BITPIX 16 with BZERO 32768
(unsigned 16-bit), with GAIN, RDNOISE and SATURATE cards and nothing else: no variance
map, no mask, no WCS. The template grid is offset by (-22.4, 48.7) px and rotated by 0.3°.
Ingest must read it (float32, variance from GAIN/RDNOISE, SAT from SATURATE), the warp
must register it by its stars, and the subtraction must be as good as for the same
scene written with a WCS:

* ``one_grid``: the same simulation parameters with the template on the science grid
  (no offset), with a WCS: the ideal case the issue compares against;
* ``wcs``: the same offset pair with its exact WCSs (warped through the sky): the same
  pixels, so only the transform differs.

The statistic is std(D/σ) over 21 × 21 stamps centred on the unsaturated stars of
template flux > 3000 ADU (about 50 stamps, 2·10⁴ pixels): it is 1 for a perfect
subtraction and grows with misregistration, which leaves dipoles on bright stars.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from psfmatch import io, synth
from psfmatch.diagnostics import STATS_BAD_PLANES, difference_metrics
from psfmatch.steps.ingest import ingest

from .chain import run_pair

pytestmark = pytest.mark.slow

SHAPE = (1024, 1024)
OFFSET = (-22.4, 48.7, 0.3)  # template grid: dx, dy (px), rotation (deg)
SATURATE = 8000.0  # the simulation's saturation level (sky + signal, ADU)
BASE = {"shape": SHAPE, "seed": 7, "bad_column": None, "n_cosmic_rays": 0,
        "saturation": SATURATE}


def write_raw(path: Path, exposure, sky: float, *, with_wcs: bool) -> Path:
    """``exposure`` (sky-subtracted) as an unsigned 16-bit raw frame."""
    raw = np.clip(np.rint(exposure.image + sky), 0, 65535).astype(np.uint16)
    header = fits.Header()
    if with_wcs:
        header.extend(exposure.wcs.to_header())
    header["GAIN"] = exposure.metadata["GAIN"]
    header["RDNOISE"] = exposure.metadata["RDNOISE"]
    header["SATURATE"] = SATURATE
    fits.PrimaryHDU(raw, header=header).writeto(path)
    return path


def subtract(workdir: Path, pair, *, with_wcs: bool) -> dict[str, Path]:
    workdir.mkdir()
    params = pair.truth.params
    paths = {}
    for role, sky in (("template", params.sky_template), ("science", params.sky_science)):
        raw = write_raw(workdir / f"raw_{role}.fits", getattr(pair, role), sky,
                        with_wcs=with_wcs)
        with fits.open(raw) as hdul:  # really stored as BITPIX 16 + BZERO 32768
            assert (hdul[0].header["BITPIX"], hdul[0].header["BZERO"]) == (16, 32768)
        paths[role] = workdir / f"{role}.fits"
        ingest(inputs={"image": str(raw)}, output_path=paths[role], label=role)
    return run_pair(workdir, paths["template"], paths["science"])


def star_stamp_std(difference_path: Path, pair, half: int = 10) -> tuple[float, int]:
    """std(D/σ) over stamps on bright unsaturated stars, and the number of stamps."""
    diff = io.read_exposure(difference_path)
    stars = pair.truth.catalogues["stars"]
    use = stars["in_frame"] & ~stars["saturated"] & (stars["flux_template"] > 3000.0)
    bad = diff.plane_bitmask(STATS_BAD_PLANES)
    (x0, y0), (ny, nx) = diff.xy0, diff.shape
    values = []
    for x, y in zip(stars["x"][use], stars["y"][use], strict=True):
        col, row = round(x - x0), round(y - y0)
        if not (half <= col < nx - half and half <= row < ny - half):
            continue
        box = np.s_[row - half:row + half + 1, col - half:col + half + 1]
        z = diff.image[box] / np.sqrt(diff.variance[box])
        good = ((diff.mask[box] & bad) == 0) & np.isfinite(z)
        if good.mean() > 0.9:  # stamps cut by the warp's NO_DATA border are left out
            values.append(z[good])
    return float(np.std(np.concatenate(values))), len(values)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw_pair")
    offset = synth.make_pair(synth.SimulationParams(**BASE, template_offset=OFFSET))
    one_grid = synth.make_pair(synth.SimulationParams(**BASE))
    return {
        "registered": (subtract(root / "registered", offset, with_wcs=False), offset),
        "wcs": (subtract(root / "wcs", offset, with_wcs=True), offset),
        "one_grid": (subtract(root / "one_grid", one_grid, with_wcs=True), one_grid),
    }


def test_raw_frames_are_ingested_as_floats_with_estimated_variance(runs):
    paths, _ = runs["registered"]
    science = io.read_exposure(paths["difference.fits"].parent / "science.fits")
    assert science.image.dtype == np.float32
    raw = fits.getdata(paths["difference.fits"].parent / "raw_science.fits")
    np.testing.assert_array_equal(science.image, raw.astype(np.float32))
    # saturated stars (clipped at SATURATE by the simulation) are flagged from the card
    assert np.array_equal(science.plane("SAT"), raw >= SATURATE)
    assert science.plane("SAT").any()
    metrics = io.read_json(paths["metrics.json"])
    for role in ("science", "template"):
        note = metrics["inputs"][role]["variance"]
        assert "gain 1 e-/ADU (header GAIN)" in note
        assert "header RDNOISE" in note
        assert any(w.startswith(f"{role} variance estimated") for w in metrics["warnings"])


def test_transform_is_recovered_at_the_corners(runs):
    paths, _ = runs["registered"]
    registration = io.read_json(paths["warp.json"])["registration"]
    assert registration["method"] == "sources"
    assert registration["reason"] == "neither image has a WCS"
    transform = registration["transform"]
    matrix, offset = np.array(transform["matrix"]), np.array(transform["offset"])
    ny, nx = SHAPE
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    t = math.radians(OFFSET[2])
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], dtype=float)
    truth = (corners - centre) @ rot.T + centre + np.asarray(OFFSET[:2])
    found = corners @ matrix.T + offset
    error = np.hypot(*(found - truth).T)
    # The bound; the fit's own 1-sigma corner errors (~0.02 px with ~200
    # matched stars) put 0.05 px at more than 2 sigma per corner.
    assert np.all(error < 0.05), error
    assert np.all(error < 4.0 * np.sqrt(2.0) * np.array(registration["corner_error_pix"]))
    assert transform["n_matches"] >= 100
    assert transform["rms_pix"] < 0.3


def test_subtraction_as_good_as_with_a_wcs(runs):
    std = {name: star_stamp_std(paths["difference.fits"], pair)
           for name, (paths, pair) in runs.items()}
    for name, (value, n_stamps) in std.items():
        assert n_stamps >= 30, (name, n_stamps)
        # D/sigma is close to N(0, 1) on the stars: the kernel fits them and the
        # estimated variance describes the noise
        assert 0.95 < value < 1.1, (name, value)
    registered, one_grid, wcs = std["registered"][0], std["one_grid"][0], std["wcs"][0]
    # The criterion: within 5 % of the same scene on one grid with a WCS
    # (measured: 1.0075 vs 1.0173; the two scenes differ, so their stars do too).
    assert abs(registered / one_grid - 1.0) < 0.05
    # Same pixels warped through the exact WCSs instead: only the transform differs
    # (by < 0.02 px), so the statistic agrees far more closely (measured: 4e-5).
    assert abs(registered / wcs - 1.0) < 0.005
    for paths, _ in runs.values():
        assert io.read_json(paths["metrics.json"])["verdict"] == "well constrained"


def test_condition_number_above_the_limit_changes_the_verdict(runs):
    paths, _ = runs["registered"]
    metrics = io.read_json(paths["metrics.json"])
    condition = metrics["spatial_condition"]
    assert condition["exceeded"] is False
    assert condition["value"] < condition["max"] == 1e10
    # the same products judged against a limit below their condition number
    diff = io.read_exposure(paths["difference.fits"])
    kernel = io.read_kernel(paths["kernel.fits"])
    candidates = io.read_table(paths["final.parquet"]).columns
    strict = difference_metrics(diff, kernel, candidates, n_star_per_cell=5,
                                max_spatial_condition_number=condition["value"] / 10.0)
    assert strict["verdict"] == "ill-conditioned"
    assert strict["spatial_condition"]["exceeded"] is True
    assert strict["warnings"] == [
        f"spatial condition number {condition['value']:.3g} exceeds "
        f"maxSpatialConditionNumber {condition['value'] / 10.0:.3g}"]
