"""QA plots drawn from the products of a real pair (skipped without ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psfmatch import io
from psfmatch.qa import qa_plot_keys
from psfmatch.steps.ingest import ingest
from psfmatch.steps.report import qa

from .chain import run_pair, shipped_config

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
DECAM_OVERRIDES = {"detectionConfig": {"detThreshold": 5.0}, "spatialKernelOrder": 0,
                   "spatialBgOrder": 1}


def run_qa(workdir: Path, paths: dict[str, Path], psf_match: dict, science: Path) -> dict:
    """qa on the products of chain.run_pair; PNGs under workdir/qa."""
    n_iter = psf_match["maxSpatialIterations"]
    outputs = {key: str(workdir / "qa" / f"{key}.png") for key in qa_plot_keys("qa")}
    (workdir / "qa").mkdir(exist_ok=True)
    drawn = qa(
        science_path=str(science), template_path=str(paths["warped.fits"]),
        difference_path=str(paths["difference.fits"]), kernel_path=str(paths["kernel.fits"]),
        candidates_path=str(paths["final.parquet"]),
        ksum_paths=[str(workdir / f"iter{i}_ksum.parquet") for i in range(n_iter)],
        stamps_path=str(paths["stamps.fits"]), metrics_path=str(paths["metrics.json"]),
        outputs=outputs, config={"psf_match": psf_match}, label=f"pair {workdir.name!r}")
    return drawn, outputs


def test_decam_pair_gets_every_plot_from_its_products(tmp_path):
    data = REAL / "decam_sfft_stamps_i"
    if not data.is_dir():
        pytest.skip(f"real data folder {data} is absent")
    ingest(inputs={"image": str(data / "DEC-OBS18a.mini.fits")},
                 output_path=tmp_path / "t.fits", label="template")
    ingest(inputs={"image": str(data / "DEC-OBS04a.mini.fits")},
                 output_path=tmp_path / "s.fits", label="science")
    paths = run_pair(tmp_path, tmp_path / "t.fits", tmp_path / "s.fits",
                     psf_match_overrides=DECAM_OVERRIDES)
    psf_match = {**shipped_config()["psf_match"], **DECAM_OVERRIDES}
    drawn, outputs = run_qa(tmp_path, paths, psf_match, tmp_path / "s.fits")

    for key, path in outputs.items():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
    table = io.read_table(paths["final.parquet"]).columns
    metrics = io.read_json(paths["metrics.json"])
    kernel = io.read_kernel(paths["kernel.fits"])
    candidates = drawn["candidates"].data
    # one red marker per BAD candidate, per rejection stage, at its position
    bad = table["status"] == "BAD"
    assert sum(len(v) for v in candidates["rejected"].values()) == int(bad.sum())
    for stage, xy in candidates["rejected"].items():
        rows = bad & (table["stage"] == stage)
        np.testing.assert_array_equal(xy, np.column_stack([table["x"][rows], table["y"][rows]]))
    assert len(candidates["used"]) == metrics["candidates"]["used_in_final_fit"]
    # the histogram is the statistic of metrics.json, over the same pixels
    hist = drawn["residual_histogram"].data
    assert hist["n"] == metrics["difference"]["n_pixels"]
    assert hist["mean"] == pytest.approx(metrics["difference"]["mean"], rel=1e-5, abs=1e-6)
    assert hist["std"] == pytest.approx(metrics["difference"]["std"], rel=1e-5)
    # order-0 spatial model: every mosaic kernel has the product's kernel sum
    np.testing.assert_allclose(drawn["kernel_mosaic"].data["sums"], kernel.kernel_sum, rtol=1e-12)
    assert drawn["kernel_basis"].data["n_basis"] == kernel.basis.shape[0]
    assert set(drawn["worst_stamps"].data["ids"]) <= set(table["id"][table["stage"] != "select"])
