"""useBicForKernelBasis through the kernel steps: the voted degrees reach metrics.json."""

from __future__ import annotations

import pytest

from psfmatch import io, steps
from psfmatch.kernel import SpatialKernel

from .chain import run_pair

pytestmark = pytest.mark.slow


def test_bic_degrees_are_used_and_recorded(tmp_path):
    sim = {"seed": 11, "shape": [384, 384], "star_density": 4000.0, "flux_min": 5000.0,
           "gain": 10.0}
    steps.simulate(simulation=sim, template_path=tmp_path / "t.fits",
                   science_path=tmp_path / "s.fits", truth_path=tmp_path / "truth.json",
                   sources_path=tmp_path / "sources.parquet")
    paths = run_pair(tmp_path, tmp_path / "t.fits", tmp_path / "s.fits",
                     psf_match_overrides={"useBicForKernelBasis": True})
    metrics = io.read_json(paths["metrics.json"])
    bic = metrics["bic"]
    degrees = tuple(bic["degrees"])
    assert bic["max_degrees"] == [4, 2, 2]
    assert all(1 <= d <= m for d, m in zip(degrees, bic["max_degrees"], strict=True))
    assert bic["n_voters"] == sum(bic["votes"].values()) > 0
    assert bic["votes"][",".join(map(str, degrees))] == max(bic["votes"].values())
    # the kernel is built on the chosen degrees: Σ (d+1)(d+2)/2 basis kernels
    kernel = SpatialKernel.read(paths["kernel.fits"])
    assert kernel.basis.shape[0] == sum((d + 1) * (d + 2) // 2 for d in degrees)
    assert metrics["basis"]["degrees"] == list(degrees)
    truth = io.read_json(tmp_path / "truth.json")
    assert metrics["kernel_sum"] == pytest.approx(truth["photometric_scale"], rel=0.01)
