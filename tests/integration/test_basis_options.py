"""Basis options through the kernel steps on one small simulated pair.

BIC degree votes (AL), a PCA spatial basis over AL kernels, and delta functions without
PCA (every pixel's coefficient spatially varying, so the kernel sum may vary too).
"""

from __future__ import annotations

import pytest

from psfmatch import io
from psfmatch.steps.simulate import simulate

from .chain import run_pair

pytestmark = pytest.mark.slow

SIMULATION = {"seed": 11, "shape": [384, 384], "star_density": 4000.0, "flux_min": 5000.0,
              "gain": 10.0}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    work = tmp_path_factory.mktemp("options")
    simulate(simulation=SIMULATION, template_path=work / "t.fits",
                   science_path=work / "s.fits", truth_path=work / "truth.json",
                   sources_path=work / "sources.parquet")
    return work, io.read_json(work / "truth.json")


def _run(pair, name, overrides, config_overrides=None):
    work, _ = pair
    (work / name).mkdir()
    paths = run_pair(work / name, work / "t.fits", work / "s.fits",
                     psf_match_overrides=overrides, config_overrides=config_overrides)
    return paths, io.read_json(paths["metrics.json"])


def test_bic_degrees_are_used_and_recorded(pair):
    paths, metrics = _run(pair, "bic", {"useBicForKernelBasis": True})
    bic = metrics["bic"]
    degrees = tuple(bic["degrees"])
    assert bic["max_degrees"] == [4, 2, 2]
    assert all(1 <= d <= m for d, m in zip(degrees, bic["max_degrees"], strict=True))
    assert bic["n_voters"] == sum(bic["votes"].values()) > 0
    assert bic["votes"][",".join(map(str, degrees))] == max(bic["votes"].values())
    # the kernel is built on the chosen degrees: Σ (d+1)(d+2)/2 basis kernels
    kernel = io.read_kernel(paths["kernel.fits"])
    assert kernel.basis.shape[0] == sum((d + 1) * (d + 2) // 2 for d in degrees)
    assert metrics["basis"]["degrees"] == list(degrees)
    assert metrics["kernel_sum"] == pytest.approx(pair[1]["photometric_scale"], rel=0.01)


def test_pca_spatial_basis_over_alard_lupton_kernels(pair):
    paths, metrics = _run(pair, "al_pca", {"usePcaForSpatialKernel": True})
    assert metrics["basis"]["type"] == "pca"
    assert metrics["basis"]["fitting_basis"]["type"] == "alard-lupton"
    kernel = io.read_kernel(paths["kernel.fits"])
    assert kernel.basis.shape[0] == 5  # numPrincipalComponents, mean included
    # q = 1: one constant coefficient + 4 x 3 spatial ones + 6 background terms
    assert metrics["n_spatial_unknowns"] == 1 + 4 * 3 + 6
    assert metrics["kernel_sum"] == pytest.approx(pair[1]["photometric_scale"], rel=0.01)
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.05
    final = io.read_table(paths["final.parquet"]).columns
    assert set(final["stage"]) <= {"", "select", "single", "ksum", "pca", "spatial"}


def test_delta_functions_without_pca(pair):
    """ip_diffim's DF path (kernel_fit.df_spatial_fit: ip_diffim) without the PCA."""
    paths, metrics = _run(pair, "df_plain", {"kernelBasisSet": "delta-function",
                                             "usePcaForSpatialKernel": False,
                                             "lambdaValue": 1.0e4},
                          {"kernel_fit": {"df_spatial_fit": "ip_diffim"}})
    kernel = io.read_kernel(paths["kernel.fits"])
    assert kernel.basis.shape == (441, 21, 21)
    assert metrics["n_spatial_unknowns"] == 441 * 3 + 6  # no constant first term
    scale = pair[1]["photometric_scale"]
    for x, y in ((50.0, 50.0), (192.0, 192.0), (330.0, 330.0)):
        assert kernel.sum_at(x, y) == pytest.approx(scale, rel=0.01)
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.05
