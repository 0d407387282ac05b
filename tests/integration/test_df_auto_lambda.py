"""Delta-function kernels without a hand-picked λ: the shipped DF default.

ip_diffim's DF setting (λ = 0.2 absolute, PCA) leaves the single kernels noise-dominated:
std(D/σ) at stars 1.56× the true-kernel oracle on the 1024² demo pair, 1.92× on this
tracking-jump pair; λ per candidate by risk minimisation is 1.02× / 1.30× with constant
weights; one λ shared by the candidates before the PCA is 1.14× on the demo. The shipped
default (``kernel_fit.df_spatial_fit: pooled``) fits the spatial DF model to all
candidates at once, penalised for roughness averaged over their positions, with one λ
minimising the unbiased predictive risk of that pooled system on a scan relative to
tr M / tr H, the kernel sum held constant over the field, the penalty projected off a
first-pass kernel's shape, and inverse-variance weights (docs/fitting.md#beyond-ip_diffim).
The only overrides here are ``kernelBasisSet`` and, for the jump pair, the sizes that
test_df_recovery.py uses (no λ).
"""

from __future__ import annotations

import pytest

from psfmatch import io, synth
from psfmatch.steps.simulate import simulate

from .chain import run_pair
from .oracle import compare, relative_l1

pytestmark = pytest.mark.slow

DF = {"kernelBasisSet": "delta-function"}
JUMP = {"seed": 7, "shape": [768, 768], "star_density": 3000.0, "flux_min": 1.0e4,
        "gain": 10.0, "tracking_jump": [3.0, 2.0, 0.35], "kernel_width_gradient": 0.1}
#: test_df_recovery.py's DF sizes for the jump pair (kernel 17², stamps 53², all stamps)
JUMP_SIZES = {"nStarPerCell": -1, "kernelSize": 17,
              "detectionConfig": {"fpGrowKernelScaling": 1.5}}
DEMO = {"seed": 42, "shape": [1024, 1024], "template_fwhm": 3.0, "science_fwhm": 4.5,
        "photometric_scale": 1.1}
CORNERS_768 = ((384, 384), (100, 100), (668, 100), (100, 668), (668, 668))


def _run(work, simulation, overrides, max_candidates):
    paths = {n: work / f"{n}.fits" for n in ("template", "science")}
    simulate(simulation=simulation, template_path=paths["template"],
             science_path=paths["science"], truth_path=work / "truth.json",
             sources_path=work / "sources.parquet")
    truth = synth.Truth.from_dict(io.read_json(work / "truth.json"))
    sources = io.read_table(work / "sources.parquet").columns
    (work / "run").mkdir()
    products = run_pair(work / "run", paths["template"], paths["science"],
                        psf_match_overrides=overrides, max_candidates=max_candidates)
    result = compare(products, paths["science"], truth, sources,
                     fwhm=truth.params.science_fwhm, shift=truth.params.kernel_shift)
    return result, truth, io.read_json(products["metrics.json"])


@pytest.fixture(scope="module")
def jump(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("jump"), JUMP, {**DF, **JUMP_SIZES}, 300)


def test_tracking_jump_at_the_oracle_without_tuning(jump):
    result, truth, metrics = jump
    print({k: v for k, v in result.items() if k != "kernel"}, metrics["regularization"])
    spatial = metrics["regularization"]["spatial"]
    assert metrics["basis"]["type"] == "delta-function"  # no PCA
    assert not spatial["at_scan_edge"]  # λ chosen inside the scan, 0.15 × tr M / tr H
    # measured 0.9994 (λ 0.2: 1.92; per-candidate risk λ: 1.30); the ratio of a correct
    # kernel scatters by < 0.3 % on these ~10⁵ star pixels
    assert result["oracle_ratio"] <= 1.03
    # measured +0.03 %; the fit's own 1σ is 0.01 %
    assert abs(result["kernel_sum_error"]) <= 2e-3
    # measured 37 vs 37
    assert result["det5_fit"] <= result["det5_true"] + 3


def test_tracking_jump_kernel_l1_guard(jump):
    """Regression guard at the measured level: L1 6.7 % (centre), 7.7 % (worst corner)."""
    result, truth, _ = jump
    for x, y in CORNERS_768:
        assert relative_l1(result["kernel"], truth.kernel, x, y) < 0.10


@pytest.mark.xfail(strict=True, reason="kernel L1 6.7 % (centre) / 7.7 % (corner) with the "
                   "risk-chosen λ: noise of the first-pass kernel in 289 free pixels "
                   "(docs/fitting.md#pooled-df-fit); the 5 % goal is not met")
def test_tracking_jump_kernel_l1_within_5_percent(jump):
    result, truth, _ = jump
    for x, y in CORNERS_768:
        assert relative_l1(result["kernel"], truth.kernel, x, y) <= 0.05


def test_demo_pair_at_the_oracle_without_tuning(tmp_path):
    result, truth, metrics = _run(tmp_path, DEMO, DF, 1000)
    accuracy = metrics["kernel_accuracy"]
    sigma = accuracy["positions"]["centre"]["kernel_sum_sigma"] / truth.photometric_scale
    print({k: v for k, v in result.items() if k != "kernel"}, sigma)
    # measured 1.0047 (λ 0.2: 1.56; per-candidate risk λ 1.02; common λ before PCA 1.14)
    assert result["oracle_ratio"] <= 1.03
    # the demo's 41 candidates are faint: the kernel sum is noise-limited (σ 0.28 %),
    # measured −0.50 %, so the 0.2 % goal is not reachable here (AL's σ is 0.13 %)
    assert abs(result["kernel_sum_error"]) < 3 * sigma
    assert accuracy["covariance"] == "lower bound"  # regularized: the bias is not in it
