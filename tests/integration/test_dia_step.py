"""The ``detect_dia_sources`` step on files: products, bad inputs, the run-level catalogue.

One 512² simulated pair (the workflow test's star density, cosmic rays off) is subtracted with
the simulator's own kernel (``tests.dia_support``) and written as the workflow would:
difference, science, matched template (or warped template + ``kernel.fits``), a final
candidate table whose GOOD rows are the bright unsaturated stars, and ``psf.json``. The step runs
on these files as its rule runs it (params from ``step_config``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import REAL_DATA
from tests.dia_support import simulate, spatial_kernel, stamp_difference

from psfmatch import io
from psfmatch.dia import COLUMNS, FLAG_BITS
from psfmatch.dia.psf import psf_moments_fwhm
from psfmatch.errors import BadSubtractionError
from psfmatch.logs import log_to_file
from psfmatch.qa import qa_plot_keys
from psfmatch.steps.dia import CUTOUT_HDUS, detect_dia_sources, dia_run_catalogue
from psfmatch.steps.dia_qa import qa_dia
from psfmatch.steps.fields import step_config
from psfmatch.steps.summary import pair_outcome

LABEL = "pair 'sim'"


def _config(**dia) -> dict:
    return step_config("detect_dia_sources", {"dia_sources": dia})


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A simulated pair's products on disk, and the in-memory truth."""
    work = tmp_path_factory.mktemp("dia_step")
    case = simulate(seed=21, star_density=6000.0, flux_min=2000.0, n_transients=30,
                    n_variables=10, n_cosmic_rays=0)
    truth = case.truth
    io.write_exposure(work / "difference.fits", case.difference)
    io.write_exposure(work / "science.fits", case.pair.science)
    io.write_exposure(work / "matched.fits", case.matched)
    io.write_exposure(work / "warped.fits", case.pair.template)
    io.write_kernel(work / "kernel.fits", spatial_kernel(truth))
    stars = truth.catalogues["stars"]
    x, y, flux = stars["x"], stars["y"], stars["flux_science"]
    good = (flux > 5000) & ~stars["saturated"]
    io.write_table(work / "candidates.parquet", {
        "x": x, "y": y, "snr": flux,  # only the order (brightest first) matters
        "status": np.where(good, "GOOD", "BAD").astype(object)})
    fwhm = float(truth.params.science_fwhm)
    # psf.json records an adaptive-moments FWHM, which includes the pixel (1/12 px²)
    measured = math.sqrt(fwhm**2 + 8 * math.log(2) / 12)
    io.write_json(work / "psf.json", {"science": {"fwhm": measured, "method": "adaptive_moments"}})
    return work, case


def _run(work: Path, out: str, *, difference="difference.fits", template="matched.fits",
         kernel=None, config=None):
    paths = {"catalogue_path": work / f"{out}_dia_sources.parquet",
             "cutouts_path": work / f"{out}_dia_cutouts.fits"}
    cat = detect_dia_sources(
        difference_path=work / difference, science_path=work / "science.fits",
        template_path=work / template, candidates_path=work / "candidates.parquet",
        psf_path=work / "psf.json", kernel_path=None if kernel is None else work / kernel,
        config=config or _config(), label=LABEL, **paths)
    return cat, paths


@pytest.fixture(scope="module")
def default_run(pair):
    work, _ = pair
    return _run(work, "dia")


def test_catalogue_and_cutouts_have_the_schema_units_flags_and_the_transients(pair, default_run):
    work, case = pair
    cat, paths = default_run
    table = io.read_table(paths["catalogue_path"])
    assert list(table.columns) == list(COLUMNS)
    assert table.units["x"] == "pix"
    assert table.units["ra"] == "deg"
    assert table.units["psf_flux"] == table.units["template_flux"] == "ADU"  # BUNIT
    assert table.metadata["flag_bits"] == dict(FLAG_BITS)
    assert table.metadata["psf"]["source"] == "gaussian"  # auto, and no PSF model in the file
    c = table.columns
    assert len(c["id"]) == len(cat) > 0
    # every bright, isolated transient is found within 1 px (centroid error at S/N >= 30
    # is ~0.1 px) with a flux within 5 sigma (+1 % for the Gaussian PSF's shape)
    t = case.truth.catalogues["transients"]
    near = np.hypot(t["x"][:, None] - t["x"][None, :], t["y"][:, None] - t["y"][None, :])
    np.fill_diagonal(near, np.inf)
    col, row = (np.rint(v).astype(int) - o for v, o in zip((t["x"], t["y"]),
                                                           case.difference.xy0, strict=True))
    inside = (col >= 0) & (col < 512) & (row >= 0) & (row < 512)
    clean = inside & (near.min(axis=1) > 20)
    clean[inside] &= case.difference.mask[row[inside], col[inside]] == 0
    dist = np.hypot(c["x"][None, :] - t["x"][:, None], c["y"][None, :] - t["y"][:, None])
    j = dist.argmin(axis=1)
    bright = clean & (t["flux_science"] / c["psf_flux_err"][j] >= 30)
    assert bright.sum() >= 5
    assert np.all(dist[bright, j[bright]] < 1.0)
    err = np.hypot(c["psf_flux_err"][j], 0.01 * t["flux_science"])
    assert np.all(np.abs(c["psf_flux"][j] - t["flux_science"])[bright] < 5 * err[bright])
    # sky positions from the science WCS (array pixel = parent - xy0)
    wcs = case.pair.science.wcs
    ra, dec = wcs.pixel_to_world_values(c["x"] - case.difference.xy0[0],
                                        c["y"] - case.difference.xy0[1])
    np.testing.assert_allclose(c["ra"], ra, rtol=0, atol=1e-9)
    np.testing.assert_allclose(c["dec"], dec, rtol=0, atol=1e-9)
    # cut-outs: one stamp per row, centred on the source, copied from the images
    stamps, meta = io.read_arrays(paths["cutouts_path"], CUTOUT_HDUS)
    n, size = len(c["id"]), meta["size"]
    assert stamps["DIFFERENCE"].shape == (n, size, size) == (n, 63, 63)
    np.testing.assert_array_equal(stamps["ID"], c["id"])
    np.testing.assert_array_equal(stamps["X0"], np.floor(c["x"] + 0.5).astype(int) - 31)
    k = 0
    xc, yc = int(stamps["X0"][k]) + 31, int(stamps["Y0"][k]) + 31
    ox, oy = case.difference.xy0
    assert stamps["DIFFERENCE"][k, 31, 31] == case.difference.image[yc - oy, xc - ox]
    assert stamps["TEMPLATE"][k, 31, 31] == case.matched.image[yc - oy, xc - ox]


def test_the_matched_template_is_rebuilt_from_the_warped_template_and_kernel(pair, default_run):
    """output.matched_template: false -> the step convolves warp/template.fits itself."""
    work, _ = pair
    cat, _ = default_run
    again, _ = _run(work, "dia_kernel", template="warped.fits", kernel="kernel.fits")
    assert len(again) == len(cat)
    for name in ("x", "y", "psf_flux", "psf_flux_err", "template_flux", "flags"):
        np.testing.assert_allclose(again.columns[name], cat.columns[name], rtol=1e-6, err_msg=name)


def test_a_difference_psf_file_is_used_as_given(pair):
    """The PSF file a decorrelation step would write wins over psf_source."""
    work, case = pair
    centre = case.pair.science.psf.image_at(256.0, 256.0)  # the simulator's own science PSF
    io.write_psf_image(work / "difference_psf.fits", centre)
    cat = detect_dia_sources(
        difference_path=work / "difference.fits", science_path=work / "science.fits",
        template_path=work / "matched.fits", candidates_path=work / "candidates.parquet",
        psf_path=work / "psf.json", difference_psf_path=work / "difference_psf.fits",
        catalogue_path=work / "file_psf.parquet", cutouts_path=work / "file_psf.fits",
        config=_config(psf_source="gaussian"), label=LABEL)
    assert cat.metadata["psf_fwhm"] == pytest.approx(psf_moments_fwhm(centre), rel=1e-6)
    psf = io.read_table(work / "file_psf.parquet").metadata["psf"]
    assert psf["source"] == "file"
    # bright transients measured with the true PSF: median flux ratio near 1
    t = case.truth.catalogues["transients"]
    c = cat.columns
    dist = np.hypot(c["x"][None, :] - t["x"][:, None], c["y"][None, :] - t["y"][:, None])
    j = dist.argmin(axis=1)
    ok = (dist[np.arange(j.size), j] < 1.0) & (np.abs(c["snr"][j]) > 30)
    assert ok.sum() >= 5
    ratios = {"file": np.median(c["psf_flux"][j[ok]] / t["flux_science"][ok])}
    # median of >= 5 sources at S/N > 30: statistical error < 1.25 * 3 % / sqrt(5) ~ 1.7 %
    assert ratios["file"] == pytest.approx(1.0, abs=0.02)


def test_an_empty_difference_gives_an_empty_catalogue_and_plots(pair, tmp_path):
    """Pure noise of the variance plane: 0.3 noise peaks per 10⁶ px are expected at 5σ
    (0.08 on this frame), and this seed has none."""
    work, case = pair
    d = case.difference
    rng = np.random.default_rng(5)
    noise = rng.normal(0.0, np.sqrt(d.variance)).astype(np.float32)
    io.write_exposure(work / "noise.fits", replace(d, image=noise))
    cat, paths = _run(work, "empty", difference="noise.fits")
    assert len(cat) == 0
    table = io.read_table(paths["catalogue_path"])
    assert list(table.columns) == list(COLUMNS)
    assert all(v.size == 0 for v in table.columns.values())
    assert table.units["psf_flux"] == "ADU"
    stamps, _ = io.read_arrays(paths["cutouts_path"], CUTOUT_HDUS)
    assert stamps["ID"].size == 0
    outputs = {key: str(tmp_path / f"{key}.png") for key in qa_plot_keys("qa_dia")}
    drawn = qa_dia(difference_path=work / "noise.fits", catalogue_path=paths["catalogue_path"],
                   cutouts_path=paths["cutouts_path"], outputs=outputs, config={}, label=LABEL)
    assert drawn["dia_cutouts"].data["ids"].size == 0
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in outputs.values())


def test_nan_pixels_are_no_data_and_do_not_stop_the_step(pair, default_run):
    work, case = pair
    d = case.difference
    image = d.image.copy()
    image[100:160, 200:260] = np.nan  # a block
    image[300, :] = np.nan  # a full row
    io.write_exposure(work / "nans.fits", replace(d, image=image))
    cat, _ = _run(work, "nans", difference="nans.fits")
    c = cat.columns
    assert np.all(np.isfinite(c["x"]) & np.isfinite(c["y"]))
    ox, oy = d.xy0
    in_block = (c["x"] - ox > 199.5) & (c["x"] - ox < 259.5) & (c["y"] - oy > 99.5) \
        & (c["y"] - oy < 159.5)
    assert not in_block.any()
    # sources well away from the NaNs are measured as before
    ref = default_run[0].columns
    far = ((np.abs(ref["y"] - oy - 300) > 20)
           & ~((ref["x"] - ox > 180) & (ref["x"] - ox < 280) & (ref["y"] - oy > 80)
               & (ref["y"] - oy < 180)))
    for x, y, f in zip(ref["x"][far], ref["y"][far], ref["psf_flux"][far], strict=True):
        k = np.argmin(np.hypot(c["x"] - x, c["y"] - y))
        assert np.hypot(c["x"][k] - x, c["y"][k] - y) < 0.05
        assert c["psf_flux"][k] == pytest.approx(f, rel=0.02)  # noise scale re-measured


def test_a_bad_subtraction_fails_naming_the_pair_and_the_numbers(pair):
    """30 % of every star left in the difference (template scaled 0.7)."""
    work, case = pair
    d, m = case.difference, case.matched
    bad = replace(d, image=(d.image + 0.3 * m.image).astype(np.float32))
    io.write_exposure(work / "bad.fits", bad)
    with pytest.raises(BadSubtractionError) as err:
        _run(work, "bad", difference="bad.fits")
    text = str(err.value)
    assert LABEL in text
    assert "bad subtraction" in text
    assert err.value.failed == "footprint_ratio_mean"
    assert err.value.value > 0.2
    assert f"{err.value.value:.4g}" in text
    assert "limit 0.2" in text
    assert not list(work.glob("bad_dia_*"))  # nothing written


def _failing_log(path: Path, error: Exception) -> None:
    with pytest.raises(type(error)), log_to_file(path):
        raise error


def test_run_catalogue_and_summary_keep_good_pairs_and_name_the_failed_one(default_run, tmp_path):
    _, paths = default_run
    cat = io.read_table(paths["catalogue_path"])
    logs = {}
    for pair in ("a", "b", "stale"):
        out = tmp_path / pair
        out.mkdir()
        io.write_table(out / "dia_sources.parquet", cat.columns, units=cat.units,
                       metadata=cat.metadata)
        logs[pair] = {}
    # "stale": its difference step failed after its catalogue was written
    failed_log = tmp_path / "convolve_stale.log"
    _failing_log(failed_log, RuntimeError("kernel exploded"))
    old = os.stat(tmp_path / "stale" / "dia_sources.parquet").st_mtime - 10
    os.utime(tmp_path / "stale" / "dia_sources.parquet", (old, old))
    logs["stale"] = {str(failed_log): "convolve"}
    catalogues = {p: str(tmp_path / p / "dia_sources.parquet") for p in ("a", "b", "stale")}
    catalogues["gone"] = str(tmp_path / "gone" / "dia_sources.parquet")
    status = dia_run_catalogue(catalogues=catalogues, logs=logs,
                               output_path=tmp_path / "dia_sources.parquet")
    assert status == {"a": "ok", "b": "ok", "stale": "stale", "gone": "missing"}
    run = io.read_table(tmp_path / "dia_sources.parquet")
    n = len(cat.columns["id"])
    assert list(run.columns) == ["pair", *COLUMNS]
    assert list(run.columns["pair"]) == ["a"] * n + ["b"] * n
    np.testing.assert_array_equal(run.columns["psf_flux"][n:], cat.columns["psf_flux"])
    assert run.units["psf_flux"] == "ADU"
    assert run.metadata["pairs"] == status
    # the summary: a pair whose DIA step failed (its difference exists) is failed there
    metrics = tmp_path / "metrics.json"
    io.write_json(metrics, {"kernel_sum": 1.1, "candidates": {}, "difference": {}})
    gate_log = tmp_path / "detect_dia_sources_x.log"
    _failing_log(gate_log, BadSubtractionError("pair 'x'", "detected_fraction", 0.5, 0.1, {}))
    row = pair_outcome(pair="x", metrics_path=metrics, plot_paths=[], logs={
        str(gate_log): "detect_dia_sources"}, dia_path=str(tmp_path / "x.parquet"))
    assert row["status"] == "failed"
    assert row["failed_step"] == "detect_dia_sources"
    assert "BadSubtractionError: pair 'x': bad subtraction" in row["error"]
    row = pair_outcome(pair="a", metrics_path=metrics, plot_paths=[], logs={},
                       dia_path=catalogues["a"])
    assert row["status"] == "ok"
    assert row["n_dia_sources"] == n
    flagged = {name: int(np.count_nonzero(cat.columns["flags"] & (1 << bit)))
               for name, bit in FLAG_BITS.items()}
    assert row["dia_flag_counts"] == flagged
    assert row["n_dia_unflagged"] == int(np.count_nonzero(cat.columns["flags"] == 0))


# ------------------------------------------------------------------ real data: ZTF alerts
TRIPLETS = REAL_DATA / "ztf_alert_triplets"
ALERTS = json.loads((TRIPLETS / "alerts_metadata.json").read_text()) if TRIPLETS.is_dir() else []


@pytest.mark.realdata
@pytest.mark.parametrize("alert", ALERTS, ids=[a["objectId"] for a in ALERTS])
def test_ztf_alert_through_the_step(alert, tmp_path):
    """Our difference of each ZTF alert's science and template stamps, as files through the
    step (Gaussian PSF from the science FWHM, no kernel candidates, so no footprint-ratio
    gate): the alert is the detection nearest the stamp centre, within 1 px, with ZTF's
    sign, and its cut-out is centred on it."""
    from astropy.io import fits

    files = alert["files"]
    made = stamp_difference(fits.getdata(TRIPLETS / files["cutoutScience"]),
                            fits.getdata(TRIPLETS / files["cutoutTemplate"]))
    io.write_exposure(tmp_path / "difference.fits", made.difference)
    io.write_exposure(tmp_path / "science.fits", made.science)
    io.write_exposure(tmp_path / "matched.fits", made.matched)
    io.write_table(tmp_path / "candidates.parquet", {
        "x": np.zeros(0), "y": np.zeros(0), "snr": np.zeros(0),
        "status": np.zeros(0, dtype="U4")})
    io.write_json(tmp_path / "psf.json", {"science": {"fwhm": made.science_fwhm}})
    # a 41-px difference holds the alert and at most a few residuals: no detected-fraction gate
    cat, paths = _run(tmp_path, "ztf", config=_config(psf_source="gaussian",
                                                      max_detected_fraction=None))
    c = io.read_table(paths["catalogue_path"]).columns
    d = np.hypot(c["x"] - 31.0, c["y"] - 31.0)  # the alert sits on the 63-px stamp's centre
    i = int(d.argmin())
    assert d[i] <= 1.0, (c["x"][i], c["y"][i])
    assert c["is_negative"][i] == (alert["candidate"]["isdiffpos"] == "f")
    assert abs(c["snr"][i]) >= 5.0
    stamps, _ = io.read_arrays(paths["cutouts_path"], CUTOUT_HDUS)
    assert (stamps["X0"][i], stamps["Y0"][i]) == (0, 0)  # 63-px cut-out of the 63-px stamp
