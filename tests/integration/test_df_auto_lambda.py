"""Delta-function kernels without a hand-picked λ: the shipped DF default.

ip_diffim's DF setting (λ = 0.2 absolute, PCA) leaves the single kernels noise-dominated:
std(D/σ) at stars 1.56× the true-kernel oracle on the 1024² demo pair, 1.92× on this
tracking-jump pair; λ per candidate by risk minimisation is 1.02× / 1.30× with constant
weights; one λ shared by the candidates before the PCA is 1.14× on the demo. The shipped
default (``kernel_fit.df_spatial_fit: pooled``) fits the spatial DF model to all
candidates at once, penalised for roughness averaged over their positions, with one λ
minimising the unbiased predictive risk of that pooled system on a scan relative to
tr M / tr H, the kernel sum held constant over the field, a band-limited prior of the
kernel's own measured width projected off a first-pass kernel's shape, and
inverse-variance weights (docs/fitting.md#beyond-ip_diffim).
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
#: the demo with bright stars (gain 10, stars ≥ 10⁴ ADU): the kernel sum resolvable to 0.01 %
BRIGHT = {**DEMO, "gain": 10.0, "flux_min": 1.0e4}
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
    assert not spatial["at_scan_edge"]  # λ inside the scan: 1e-4 × tr M / tr H
    # measured 0.9996 (λ 0.2: 1.92; per-candidate risk λ: 1.30); the ratio of a correct
    # kernel scatters by < 0.3 % on these ~10⁵ star pixels
    assert result["oracle_ratio"] <= 1.03
    # measured +0.02 %; the fit's own 1σ is 0.01 %
    assert abs(result["kernel_sum_error"]) <= 2e-3
    # measured 37 vs 37
    assert result["det5_fit"] <= result["det5_true"] + 3


def test_tracking_jump_kernel_l1_within_5_percent(jump):
    """The kernel itself, not only the difference, is right to 5 % (relative L1).

    With the roughness penalty projected off a first-pass shape the kernel's L1 error
    was 6.7 % (centre) / 7.7 % (worst corner): noise at frequencies the template's PSF
    hides from the data, kept by the shape projection. The band-limited prior (the
    default ``kernel_fit.df_prior``) damps those: measured 2.4, 3.2, 2.2, 2.6, 2.0 % at
    the centre and the four positions 100 px in. The statistical part of the error is
    0.2–0.4 % here (the fit's covariance), so 5 % leaves room for a different noise draw,
    not for a return of the roughness prior's 6.7 %.
    """
    result, truth, metrics = jump
    assert metrics["regularization"]["spatial"]["prior"] == "band_limited"
    l1 = [relative_l1(result["kernel"], truth.kernel, x, y) for x, y in CORNERS_768]
    print("L1 at", CORNERS_768, l1)
    assert max(l1) <= 0.05


def test_demo_pair_at_the_oracle_without_tuning(tmp_path):
    result, truth, metrics = _run(tmp_path, DEMO, DF, 1000)
    accuracy = metrics["kernel_accuracy"]
    sigma = accuracy["positions"]["centre"]["kernel_sum_sigma"] / truth.photometric_scale
    print({k: v for k, v in result.items() if k != "kernel"}, sigma)
    # measured 1.0046 (λ 0.2: 1.56; per-candidate risk λ 1.02; common λ before PCA 1.14)
    assert result["oracle_ratio"] <= 1.03
    # the demo's 41 candidates are faint: the kernel sum is noise-limited (σ 0.28 %),
    # measured −0.49 %, so the 0.2 % goal is not reachable here (AL's σ is 0.13 %; over
    # twenty seeds the sum scatters by 1.07 % for DF, 0.74 % for AL:
    # docs/fitting.md#pooled-df-fit)
    assert abs(result["kernel_sum_error"]) < 3 * sigma
    assert accuracy["covariance"] == "lower bound"  # regularized: the bias is not in it


def test_bright_pair_at_the_oracle_with_every_stamp(tmp_path):
    """All three DF goals on one simulated pair where the noise can resolve them.

    With ip_diffim's 5 stamps per cell (316 candidates) the L1 is 3.4 % at the centre and
    5.0 % in the worst corner (5.2 % on another realisation): the corners are extrapolated
    by the spatial model and its error falls as 1/√(candidates). Every stamp
    (``nStarPerCell: -1``, 1206 candidates) gives 2.9 % / 4.4 %.
    """
    result, truth, metrics = _run(tmp_path, BRIGHT, {**DF, "nStarPerCell": -1}, 3000)
    accuracy = metrics["kernel_accuracy"]
    sigma = accuracy["positions"]["centre"]["kernel_sum_sigma"] / truth.photometric_scale
    print({k: v for k, v in result.items() if isinstance(v, (int, float))}, sigma)
    assert metrics["candidates"]["used_in_final_fit"] > 1000  # every stamp, not 5 per cell
    assert result["oracle_ratio"] <= 1.03  # measured 0.9999
    # measured −0.04 %; the fit's own 1σ is about 0.01 %, so 0.2 % is a real test here
    assert sigma < 5e-4
    assert abs(result["kernel_sum_error"]) <= 2e-3
    l1 = {name: relative_l1(result["kernel"], truth.kernel, p["x"], p["y"])
          for name, p in accuracy["positions"].items()}
    print("L1", l1)
    # measured 2.9 % (centre) to 4.4 % (worst corner); the statistical part alone is
    # 0.5–1.1 % (the covariance), and the rest is the prior's bias, which another noise
    # draw moves little (5.0 → 5.2 % at 5 per cell)
    assert max(l1.values()) <= 0.05
