"""Run the Snakemake workflow end to end in a scratch working directory."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.snakemake_run import run_snakemake

from psfmatch import io
from psfmatch.dia import COLUMNS, FLAG_BITS
from psfmatch.qa import QA_PLOTS, qa_plot_keys
from psfmatch.steps.dia_qa import qa_dia
from psfmatch.steps.fields import step_config
from psfmatch.steps.report import qa

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# A 512² pair dense enough in bright stars for a well-constrained order-1 fit, and an
# empty 256² pair (no stars) that must fail on its own.
SIMULATIONS = {
    "good": {"seed": 3, "shape": [512, 512], "star_density": 6000.0, "flux_min": 2000.0},
    "empty": {"seed": 4, "shape": [256, 256], "star_density": 0.0, "galaxy_density": 0.0,
              "n_transients": 0, "n_variables": 0, "n_cosmic_rays": 0},
}


def _write_config(workdir: Path, config: dict, pairs: list[str]) -> None:
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    rows = "".join(
        f"{p}\tresults/simulated/{p}/template.fits\tresults/simulated/{p}/science.fits\n"
        for p in pairs
    )
    (workdir / "config" / "pairs.tsv").write_text("pair\ttemplate\tscience\n" + rows)
    # model-PSF matching of the first pair's template, with the PSF the simulator used
    exposures = "".join(
        f"{p}_template\tresults/simulated/{p}/template.fits\tresults/simulated/{p}/template_psf.fits\n"
        for p in pairs[:1]
    )
    (workdir / "config" / "exposures.tsv").write_text("id\timage\tpsf\n" + exposures)


def _base_config(pairs: list[str]) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = {p: SIMULATIONS[p] for p in pairs}
    config["pairs"] = "config/pairs.tsv"
    config["model_psf_match"]["exposures"] = "config/exposures.tsv"
    return config




def _jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = dry_run_output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) not in ("total", "job")}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One --keep-going run over a good and an empty pair, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("wf")
    _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])
    run = run_snakemake(workdir, "--cores", "2", "--keep-going")
    return workdir, run


def test_good_pair_produces_every_product(finished_run):
    workdir, run = finished_run
    out = workdir / "results" / "good"
    for name in ("difference.fits", "matched_template.fits", "kernel.fits", "metrics.json"):
        assert (out / name).is_file(), run.stdout + run.stderr
    # ingest is lossless
    simulated = io.read_exposure(workdir / "results/simulated/good/science.fits")
    ingested = io.read_exposure(out / "input/science.fits")
    np.testing.assert_array_equal(ingested.image, simulated.image)
    np.testing.assert_array_equal(ingested.mask, simulated.mask)
    np.testing.assert_array_equal(ingested.variance, simulated.variance)
    metrics = io.read_json(out / "metrics.json")
    truth = io.read_json(workdir / "results/simulated/good/truth.json")
    assert metrics["verdict"] == "well constrained"
    # Kernel sum within 1 % of the photometric scale on this small, 512² field.
    assert metrics["kernel_sum"] == pytest.approx(truth["photometric_scale"], rel=0.01)
    assert io.read_kernel(out / "kernel.fits").kernel_sum == metrics["kernel_sum"]
    # Unmasked difference pixels are noise-like: clipped std of D/sigma near 1
    # (stars, galaxies and transients excluded by the clipping).
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.05
    for rule in ("warp", "detect", "select", "fit_single_kernels", "convolve"):
        assert (workdir / f"logs/{rule}/good.log").is_file()
        assert (workdir / f"benchmarks/{rule}/good.tsv").is_file()


def test_empty_pair_fails_alone_with_counts_and_no_partial_outputs(finished_run):
    workdir, run = finished_run
    assert run.returncode != 0
    log = (workdir / "logs/detect/empty.log").read_text()
    assert "InsufficientCandidatesError" in log
    assert "pair 'empty'" in log
    assert "detected=0" in log
    assert not (workdir / "results/empty/detect").exists() or not any(
        (workdir / "results/empty/detect").iterdir()
    )
    assert not list((workdir / "results").rglob(".tmp-*"))


def test_changing_spatial_order_reruns_only_the_steps_that_read_it(finished_run, tmp_path):
    workdir, _ = finished_run
    config = _base_config(["good"])
    config["psf_match"]["spatialKernelOrder"] = 2
    _write_config(workdir, config, ["good"])
    try:
        dry = run_snakemake(workdir, "-n", "--cores", "2")
        jobs = _jobs(dry.stdout)
        assert {"spatial_fit", "assess", "final_kernel", "convolve"} <= set(jobs), dry.stdout
        assert not {"simulate", "ingest", "warp", "detect", "select", "fit_single_kernels"} & set(jobs)
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])


def test_a_delta_function_field_is_read_by_no_step_of_an_al_run(finished_run):
    workdir, _ = finished_run
    config = _base_config(["good"])
    config["psf_match"]["lambdaValue"] = 5.0
    config["psf_match"]["numPrincipalComponents"] = 4  # PCA is off for AL by default
    _write_config(workdir, config, ["good"])
    try:
        dry = run_snakemake(workdir, "-n", "--cores", "2")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert _jobs(dry.stdout) == {}, dry.stdout
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])


def test_a_config_with_keys_in_another_order_reruns_nothing(finished_run):
    """Tools rewrite YAML with sorted (or any) key order: params must not see it."""
    workdir, _ = finished_run

    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return value

    config = _base_config(["good"])
    _write_config(workdir, config, ["good"])
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(reverse(config),
                                                                   sort_keys=False))
    try:
        dry = run_snakemake(workdir, "-n", "--cores", "2")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert _jobs(dry.stdout) == {}, dry.stdout
        assert "Nothing to be done" in dry.stdout + dry.stderr
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])


def _df_config() -> dict:
    config = _base_config(["good"])
    config["psf_match"].update({"kernelBasisSet": "delta-function", "lambdaValue": 1.0e4,
                                "numPrincipalComponents": 3,
                                "calculateKernelUncertainty": True})
    # ip_diffim's DF path (per-candidate λ, PCA), not the shipped pooled fit
    config["kernel_fit"] = {**(config.get("kernel_fit") or {}), "df_spatial_fit": "ip_diffim"}
    config["detection"]["max_candidates"] = 150
    return config


@pytest.fixture(scope="module")
def finished_df_run(tmp_path_factory):
    """The good pair through the same DAG with a delta-function basis (PCA by default)."""
    workdir = tmp_path_factory.mktemp("wf_df")
    _write_config(workdir, _df_config(), ["good"])
    run = run_snakemake(workdir, "--cores", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    return workdir


def test_delta_function_run_uses_the_same_steps_and_stores_uncertainties(finished_df_run):
    out = finished_df_run / "results" / "good"
    metrics = io.read_json(out / "metrics.json")
    truth = io.read_json(finished_df_run / "results/simulated/good/truth.json")
    assert metrics["basis"]["type"] == "pca"
    assert metrics["basis"]["fitting_basis"]["type"] == "delta-function"
    assert metrics["kernel_sum"] == pytest.approx(truth["photometric_scale"], rel=0.01)
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.05
    kernel = io.read_kernel(out / "kernel.fits")
    assert kernel.covariance is not None
    # the 1-sigma kernel sum is small but not zero (hundreds of bright candidates)
    assert 0 < metrics["uncertainty"]["kernel_sum_sigma"] < 0.01


@pytest.mark.parametrize(
    ("field", "value", "reran", "kept"),
    [
        ("lambdaValue", 2.0e4, {"fit_single_kernels", "spatial_fit", "final_kernel", "convolve"},
         {"simulate", "ingest", "warp", "detect", "select"}),
        ("numPrincipalComponents", 4, {"spatial_fit", "assess", "final_kernel", "convolve"},
         {"simulate", "ingest", "warp", "detect", "select", "fit_single_kernels"}),
        ("alardSigGauss", [0.8, 1.6, 3.2], set(),
         {"simulate", "ingest", "warp", "detect", "select", "fit_single_kernels", "spatial_fit"}),
    ],
)
def test_changing_a_delta_function_field_reruns_only_its_readers(finished_df_run, field, value,
                                                                  reran, kept):
    config = _df_config()
    config["psf_match"][field] = value
    _write_config(finished_df_run, config, ["good"])
    try:
        dry = run_snakemake(finished_df_run, "-n", "--cores", "2")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        jobs = _jobs(dry.stdout)
        assert reran <= set(jobs), dry.stdout
        assert not kept & set(jobs), dry.stdout
    finally:
        _write_config(finished_df_run, _df_config(), ["good"])


def test_typo_in_psf_match_fails_before_any_job(tmp_path):
    config = _base_config(["good"])
    config["psf_match"]["kernalSize"] = 21
    _write_config(tmp_path, config, ["good"])
    run = run_snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "kernalSize" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


def test_out_of_range_value_fails_naming_key_and_value(tmp_path):
    config = _base_config(["good"])
    config["psf_match"]["spatialKernelOrder"] = -1
    _write_config(tmp_path, config, ["good"])
    run = run_snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "spatialKernelOrder" in run.stdout + run.stderr
    assert "-1" in run.stdout + run.stderr


def test_model_psf_matching_products(finished_run):
    workdir, run = finished_run
    out = workdir / "results" / "psf_matched" / "good_template"
    for name in ("matched.fits", "kernel.fits", "cells.parquet", "metrics.json"):
        assert (out / name).is_file(), run.stdout + run.stderr
    config = _base_config(["good"])
    target_fwhm = config["model_psf_match"]["target"]["fwhm"]
    matched = io.read_exposure(out / "matched.fits")
    # the target PSF is attached: adaptive-moments FWHM of the sampled Gaussian
    from psfmatch.psf import adaptive_fwhm

    assert adaptive_fwhm(matched.psf.image) == pytest.approx(target_fwhm, rel=1e-3)
    metrics = io.read_json(out / "metrics.json")
    assert metrics["kernel_sum"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["cells"]["rejected"] == 0 and metrics["cells"]["used"] == 36  # (512+256)/128 = 6
    assert metrics["verdict"] == "well constrained"
    assert metrics["matched_psf_residual"]["fit_region"]["max"] < 0.01
    for rule in ("model_psf_kernel", "model_psf_convolve"):
        assert (workdir / f"logs/{rule}/good_template.log").is_file()


def test_changing_target_fwhm_reruns_only_model_psf_steps(finished_run):
    workdir, _ = finished_run
    config = _base_config(["good"])
    config["model_psf_match"]["target"]["fwhm"] = 6.0
    _write_config(workdir, config, ["good"])
    try:
        dry = run_snakemake(workdir, "-n", "--cores", "2")
        jobs = _jobs(dry.stdout)
        assert {"model_psf_kernel", "model_psf_convolve"} <= set(jobs), dry.stdout
        assert set(jobs) <= {"model_psf_kernel", "model_psf_convolve", "psf_match_all", "all"}
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])


# ---------------------------------------------------------------------- QA and report
PNG = b"\x89PNG\r\n\x1a\n"


def test_good_pair_gets_every_qa_plot_and_the_failed_pair_none(finished_run):
    workdir, run = finished_run
    for key in QA_PLOTS:
        assert (workdir / f"results/good/qa/{key}.png").read_bytes()[:8] == PNG, run.stderr
    assert not (workdir / "results/empty/qa").exists()


def test_run_summary_marks_the_failed_pair_with_its_error(finished_run):
    workdir, run = finished_run
    summary = io.read_table(workdir / "results/qa/summary.parquet").columns
    row = {str(p): i for i, p in enumerate(summary["pair"])}
    assert set(row) == {"good", "empty"}
    good, empty = row["good"], row["empty"]
    metrics = io.read_json(workdir / "results/good/metrics.json")
    assert summary["status"][good] == "ok"
    assert summary["plots"][good] == f"{len(QA_PLOTS)}/{len(QA_PLOTS)}"
    assert summary["kernel_sum"][good] == metrics["kernel_sum"]
    assert summary["n_used"][good] == metrics["candidates"]["used_in_final_fit"]
    assert summary["residual_clipped_std"][good] == metrics["difference"]["clipped_std"]
    assert summary["status"][empty] == "failed"
    assert summary["failed_step"][empty] == "detect"
    assert "InsufficientCandidatesError: pair 'empty': no kernel candidates detected" in \
        summary["error"][empty]
    assert summary["plots"][empty] == f"0/{len(QA_PLOTS)}"
    assert "pair 'empty' failed" in run.stderr


def test_qa_plots_are_drawn_from_the_products(finished_run, tmp_path):
    """Redraw the good pair's plots from its products: same PNGs, numbers from the tables."""
    from matplotlib.colors import to_rgba


    workdir, _ = finished_run
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    out = workdir / "results" / "good"
    last = config["psf_match"]["maxSpatialIterations"] - 1
    outputs = {key: str(tmp_path / f"{key}.png") for key in qa_plot_keys("qa")}
    drawn = qa(
        science_path=out / "input/science.fits", template_path=out / "warp/template.fits",
        difference_path=out / "difference.fits", kernel_path=out / "kernel.fits",
        candidates_path=out / "final/candidates.parquet",
        ksum_paths=[out / f"iter{i}/ksum.parquet" for i in range(last + 1)],
        stamps_path=out / "select/stamps.fits", metrics_path=out / "metrics.json",
        outputs=outputs, config=step_config("qa", config), label="pair 'good'")
    for key in outputs:  # the workflow's PNGs are these plots
        assert Path(outputs[key]).read_bytes() == (out / f"qa/{key}.png").read_bytes(), key
    table = io.read_table(out / "final/candidates.parquet").columns
    metrics = io.read_json(out / "metrics.json")
    n_bad = int((table["status"] == "BAD").sum())
    assert n_bad > 0  # the simulated pair has variable stars and masked columns
    ax = drawn["candidates"].figure.axes[0]
    red = [len(c.get_offsets()) for c in ax.collections
           if any(np.allclose(col, to_rgba("red"))
                  for col in (*c.get_facecolor(), *c.get_edgecolor()))]
    assert sum(red) == n_bad
    assert len(drawn["candidates"].data["used"]) == metrics["candidates"]["used_in_final_fit"]
    assert drawn["residual_histogram"].data["n"] == metrics["difference"]["n_pixels"]
    ksum = io.read_table(out / "iter0/ksum.parquet").metadata["kernel_sum_passes"][-1]
    assert drawn["kernel_sum"].data["limits"][0] == pytest.approx(
        (ksum["mean"], ksum["mean"] - ksum["limit"], ksum["mean"] + ksum["limit"]))
    kernel = io.read_kernel(out / "kernel.fits")
    mosaic = drawn["kernel_mosaic"].data
    assert mosaic["sums"][2, 2] == pytest.approx(kernel.sum_at(mosaic["x"][2], mosaic["y"][2]))


def test_report_of_a_partly_failed_run_opens_in_chromium(finished_run, tmp_path):
    """`snakemake --report` builds one offline HTML file; every plot loads in a browser."""
    from report_browser import browse_report, chromium_or_skip, png_size

    workdir, _ = finished_run
    report = workdir / "report.html"
    run = run_snakemake(workdir, "--report", str(report))
    assert run.returncode == 0, run.stdout + run.stderr
    browser, driver = chromium_or_skip()
    screenshot = tmp_path / "report_candidates.png"
    seen = browse_report(report, browser=browser, driver=driver, screenshot=screenshot,
                         screenshot_result="results/good/qa/candidates.png")
    print(f"report screenshot: {screenshot}")
    images = {p for p, mime in seen["results"].items() if mime == "image/png"}
    assert images == {f"results/good/qa/{k}.png" for k in
                      ("images", "candidates", "kernel_basis", "kernel_mosaic", "spatial_model",
                       "kernel_sum", "residual_histogram", "worst_stamps", "dia_detections",
                       "dia_cutouts")}
    for path in images:  # every plot was shown, at its own size
        assert seen["shown"][path]["img_width"] == png_size(workdir / path)[0], path
    summary = seen["shown"]["results/qa/summary.html"]["text"]
    for text in ("empty", "failed", "detect", "InsufficientCandidatesError"):
        assert text in summary
    assert seen["broken"] == []
    assert seen["console"] == []
    assert seen["external"] == []  # offline: nothing fetched but the file and its data URIs
    assert png_size(screenshot)[0] > 0


# ---------------------------------------------------------------------- DIA sources
def test_dia_products_and_the_run_catalogue_of_the_pairs_that_succeeded(finished_run, tmp_path):
    """The good pair's catalogue, cut-outs and plots; the empty pair (failed upstream) costs
    only its own rows; counts per flag in the run summary."""
    workdir, run = finished_run
    out = workdir / "results" / "good"
    table = io.read_table(out / "dia_sources.parquet")
    c = table.columns
    assert list(c) == list(COLUMNS), run.stderr
    assert table.units["x"] == "pix"
    assert table.units["psf_flux"] == "ADU"
    assert table.metadata["flag_bits"] == dict(FLAG_BITS)
    assert (workdir / "logs/detect_dia_sources/good.log").is_file()
    assert (workdir / "benchmarks/detect_dia_sources/good.tsv").is_file()
    # Bright transients (>= 3000 ADU: S/N >= ~20 on the demo's 200-ADU sky with FWHM 4.5)
    # away from masked pixels are all found within 1 px, brighter in the science image.
    src = io.read_table(workdir / "results/simulated/good/sources.parquet").columns
    diff = io.read_exposure(out / "difference.fits")
    t = (src["kind"] == "transient") & src["in_frame"] & (src["flux_science"] >= 3000)
    col, row = np.rint(src["x"][t]).astype(int), np.rint(src["y"][t]).astype(int)
    inside = (col >= 5) & (col < diff.shape[1] - 5) & (row >= 5) & (row < diff.shape[0] - 5)
    masked = np.array([diff.mask[r - 5:r + 6, q - 5:q + 6].any() if ok else True
                       for q, r, ok in zip(col, row, inside, strict=True)])
    x, y = src["x"][t][~masked], src["y"][t][~masked]
    assert x.size >= 3
    dist = np.hypot(c["x"][None, :] - x[:, None], c["y"][None, :] - y[:, None])
    j = dist.argmin(axis=1)
    assert np.all(dist[np.arange(x.size), j] < 1.0)
    assert not c["is_negative"][j].any()
    stamps, _ = io.read_arrays(out / "dia_cutouts.fits", ("SCIENCE", "TEMPLATE", "DIFFERENCE"))
    assert stamps["DIFFERENCE"].shape == (c["id"].size, 63, 63)
    # the run-level catalogue: the good pair's rows with their pair id; the empty pair has none
    catalogue = io.read_table(workdir / "results/dia_sources.parquet")
    assert list(catalogue.columns) == ["pair", *COLUMNS]
    assert set(catalogue.columns["pair"]) == {"good"}
    np.testing.assert_array_equal(catalogue.columns["psf_flux"], c["psf_flux"])
    assert catalogue.metadata["pairs"] == {"good": "ok", "empty": "missing"}
    summary = io.read_table(workdir / "results/qa/summary.parquet")
    row = list(summary.columns["pair"]).index("good")
    assert summary.columns["n_dia_sources"][row] == c["id"].size
    counts = summary.metadata["dia_flag_counts"]["good"]
    assert counts == {n: int(np.count_nonzero(c["flags"] & (1 << b))) for n, b in FLAG_BITS.items()}
    # the plots are drawn from these products
    outputs = {key: str(tmp_path / f"{key}.png") for key in qa_plot_keys("qa_dia")}
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    drawn = qa_dia(difference_path=out / "difference.fits",
                   catalogue_path=out / "dia_sources.parquet",
                   cutouts_path=out / "dia_cutouts.fits", outputs=outputs,
                   config=step_config("qa_dia", config), label="pair 'good'")
    for key in outputs:
        assert Path(outputs[key]).read_bytes() == (out / f"qa/{key}.png").read_bytes(), key
    shown = drawn["dia_detections"].data
    assert sum(len(shown[k]) for k in ("positive", "negative", "dipole")) == c["id"].size
    assert drawn["dia_cutouts"].data["ids"].size == min(16, c["id"].size)


@pytest.mark.parametrize(("field", "value", "reran"), [
    ("threshold", 6.0, {"detect_dia_sources", "qa_dia"}),
    ("gallery_size", 4, {"qa_dia"}),
])
def test_changing_a_dia_sources_field_reruns_only_the_dia_steps(finished_run, field, value,
                                                                reran):
    workdir, _ = finished_run
    config = _base_config(["good"])
    config["dia_sources"][field] = value
    _write_config(workdir, config, ["good"])
    try:
        dry = run_snakemake(workdir, "-n", "--cores", "2")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert set(_jobs(dry.stdout)) == reran | {"all"}, dry.stdout
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])


@pytest.mark.parametrize(("key", "value", "expected"), [
    # the afterburner is its own rule: only it and the QA plots read its result
    ("doDecorrelation", False, {"decorrelate", "qa", "detect_dia_sources", "qa_dia"}),
    # the mode is decided after the warp: everything from there on, nothing before
    ("mode", "convolveScience", {"subtraction_mode", "detect", "select", "fit_single_kernels",
                                 "kernel_sum_clip", "spatial_fit", "assess", "final_kernel",
                                 "convolve", "decorrelate", "qa", "detect_dia_sources",
                                 "qa_dia"}),
])
def test_a_subtract_field_reruns_only_its_step_and_what_follows(finished_run, key, value,
                                                                expected):
    workdir, _ = finished_run
    config = _base_config(["good"])
    config["subtract"][key] = value
    _write_config(workdir, config, ["good"])
    try:
        dry = run_snakemake(workdir, "-n", "--cores", "2")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert set(_jobs(dry.stdout)) - {"all"} == expected, dry.stdout
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])


def test_the_final_difference_is_decorrelated_with_its_psf_and_mode_record(finished_run):
    workdir, _ = finished_run
    out = workdir / "results" / "good"
    metrics = io.read_json(out / "metrics.json")
    assert metrics["mode"]["mode"] == "convolveTemplate"
    assert metrics["mode"]["requested"] == "auto"
    assert metrics["decorrelation"]["applied"] is True
    assert metrics["template_coverage"] == 1.0
    # the raw convolve output keeps today's difference; the final one is whitened
    raw = io.read_exposure(out / "convolve/difference.fits")
    final = io.read_exposure(out / "difference.fits")
    np.testing.assert_array_equal(raw.mask, final.mask)
    assert not np.array_equal(raw.image, final.image)
    psf = io.read_psf_model(out / "difference_psf.fits").image_at(0.0, 0.0)
    assert float(psf.sum()) == pytest.approx(1.0, abs=1e-9)
    assert io.read_kernel(out / "kernel.fits").metadata["maps"] == "template->science"


@pytest.mark.parametrize(("key", "value", "reran", "kept"), [
    # ingest reads estimate_saturation: everything after it reruns
    ("estimate_saturation", False, {"ingest", "warp", "fit_single_kernels", "convolve"}, set()),
    # the order search is the spatial fit's: the single fits stay
    ("spatial_order", "configured", {"spatial_fit", "assess", "final_kernel", "convolve"},
     {"simulate", "ingest", "warp", "detect", "select", "fit_single_kernels"}),
    # a delta-function option is read by no step of an AL run
    ("df_spatial_fit", "ip_diffim", set(),
     {"ingest", "fit_single_kernels", "spatial_fit", "final_kernel", "convolve"}),
])
def test_a_kernel_fit_field_reruns_only_its_readers(finished_run, key, value, reran, kept):
    workdir, _ = finished_run
    config = _base_config(["good"])
    config["kernel_fit"] = {**config["kernel_fit"], key: value}
    _write_config(workdir, config, ["good"])
    try:
        dry = run_snakemake(workdir, "-n", "--cores", "2")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        jobs = set(_jobs(dry.stdout))
        assert reran <= jobs, dry.stdout
        assert not kept & jobs, dry.stdout
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])
