"""Delta-function kernels without a hand-picked λ: one λ for the pooled spatial fit.

ip_diffim's shipped DF setting (λ = 0.2 absolute) leaves the single kernels noise-
dominated (std(D/σ) at stars 1.56× the true-kernel oracle on the 1024² demo pair, 1.92×
on this tracking-jump pair); λ per candidate by risk minimisation is 1.02× / 1.30× with
constant weights; one λ shared by the candidates before the PCA is 1.14× on the demo
(bright candidates want far less smoothing than faint ones). What reaches the oracle
(bench/fidelity, notes/fidelity-findings.md): the spatial DF model fitted to all
candidates at once with a smoothness penalty averaged over their positions, λ by the
unbiased predictive risk of that pooled system on a scan relative to tr M / tr H, the
kernel sum held constant over the field and the penalty projected off the pilot
kernel's shape (:mod:`psfmatch.pooled_fit`), with inverse-variance weights so that the
risk estimate is calibrated. Until the steps call it, the spatial fit is routed through
it here (tests/integration/prototypes.py).
"""

from __future__ import annotations

import pytest

from psfmatch import io, synth

from .chain import run_pair
from .oracle import compare, relative_l1
from .prototypes import patched, pooled_df

pytestmark = pytest.mark.slow

AUTO = {"kernelBasisSet": "delta-function", "lambdaType": "minimizeUnbiasedRisk",
        "lambdaMin": -2.0, "lambdaMax": 8.0, "constantVarianceWeighting": False,
        "usePcaForSpatialKernel": False, "calculateKernelUncertainty": True}
JUMP = {"seed": 7, "shape": [768, 768], "star_density": 3000.0, "flux_min": 1.0e4,
        "gain": 10.0, "tracking_jump": [3.0, 2.0, 0.35], "kernel_width_gradient": 0.1}
DEMO = {"seed": 42, "shape": [1024, 1024], "template_fwhm": 3.0, "science_fwhm": 4.5,
        "photometric_scale": 1.1}


def _run(tmp_path, simulation, overrides, max_candidates):
    from psfmatch import steps

    paths = {n: tmp_path / f"{n}.fits" for n in ("template", "science")}
    steps.simulate(simulation=simulation, template_path=paths["template"],
                   science_path=paths["science"], truth_path=tmp_path / "truth.json",
                   sources_path=tmp_path / "sources.parquet")
    truth = synth.Truth.from_dict(io.read_json(tmp_path / "truth.json"))
    sources = io.read_table(tmp_path / "sources.parquet").columns
    records: list = []
    (tmp_path / "run").mkdir()
    with patched(pooled_df, records=records):
        products = run_pair(tmp_path / "run", paths["template"], paths["science"],
                            psf_match_overrides=overrides, max_candidates=max_candidates)
    result = compare(products, paths["science"], truth, sources,
                     fwhm=truth.params.science_fwhm, shift=truth.params.kernel_shift)
    return result, truth, records


def test_tracking_jump_at_the_oracle_without_tuning(tmp_path):
    overrides = {**AUTO, "nStarPerCell": -1, "kernelSize": 17,
                 "detectionConfig": {"fpGrowKernelScaling": 1.5}}
    result, truth, records = _run(tmp_path, JUMP, overrides, 300)
    print(result, records[-1])
    assert records, "the pooled fit did not run"
    assert not records[-1]["at_scan_edge"]
    # measured 0.9994 (λ 0.2: 1.92, per-candidate risk λ: 1.30)
    assert result["oracle_ratio"] <= 1.03
    # measured +0.03 %; the fit's own 1σ is 0.01 %
    assert abs(result["kernel_sum_error"]) <= 2e-3
    assert result["det5_fit"] <= result["det5_true"] + 3
    # kernel L1 measured 6.7 % (centre) and 7.7 % (worst corner): above the 5 % goal;
    # the error is noise in the kernel's wings (see notes); the bound guards the level
    for x, y in ((384, 384), (100, 100), (668, 100), (100, 668), (668, 668)):
        assert relative_l1(result["kernel"], truth.kernel, x, y) < 0.10


def test_demo_pair_at_the_oracle_without_tuning(tmp_path):
    result, truth, _ = _run(tmp_path, DEMO, AUTO, 1000)
    kernel = result["kernel"]
    sigma = kernel.sum_variance_at(*kernel.centre) ** 0.5 / truth.photometric_scale
    print(result, sigma)
    # measured 1.0047 (λ 0.2: 1.56; per-candidate risk λ 1.02; common λ before PCA 1.14)
    assert result["oracle_ratio"] <= 1.03
    # the demo's 40 candidates are faint: the kernel sum is noise-limited (σ ≈ 0.3 %);
    # measured −0.50 %
    assert abs(result["kernel_sum_error"]) < 3 * sigma
