"""The kernel as a product: its own error, and the flux scale with a noisy template.

With ip_diffim's default ``constantVarianceWeighting: true`` every pixel of a stamp gets
the stamp's median variance, so a bright star's core (whose Poisson variance is many
times the sky's) is over-weighted: on a 2048² demo-density pair (stars from 1e4 ADU,
gain 10) the AL kernel's relative L1 error is 1.7 % at the centre and 3.4 % in the worst
corner, 4–6× what its covariance predicts. Inverse-variance weights
(``constantVarianceWeighting: false``) give 0.8 % / 1.4 %, and the covariance then
predicts the error (0.6 % / 1.6 %); keeping constant weights within each stamp but
weighting the candidates by the variance under their model
(``kernel_fit.candidate_weights: noise_corrected``) gives 0.8 % / 1.8 %. Keeping
ip_diffim's weights but fitting every stamp instead of its 5 per 128² cell
(``nStarPerCell: -1``, the 3000 brightest detections: 2913 candidates instead of 894)
gives 1.1 % / 1.8 %.
"""

from __future__ import annotations

import pytest

from psfmatch import io, synth
from psfmatch.steps.simulate import simulate

from .chain import run_pair
from .oracle import relative_l1

pytestmark = pytest.mark.slow

BRIGHT = {"seed": 42, "template_fwhm": 3.0, "science_fwhm": 4.5, "photometric_scale": 1.1,
          "gain": 10.0, "flux_min": 1.0e4}


def _pair(work, simulation, overrides, sections=None, max_candidates=1000):
    t, s = work / "t.fits", work / "s.fits"
    simulate(simulation=simulation, template_path=t, science_path=s,
                   truth_path=work / "truth.json", sources_path=work / "sources.parquet")
    products = run_pair(work, t, s, psf_match_overrides=overrides, config_overrides=sections,
                        max_candidates=max_candidates)
    return products, synth.Truth.from_dict(io.read_json(work / "truth.json"))


def test_kernel_l1_under_3_percent_and_covariance_calibrated_at_2048(tmp_path):
    """Settings: the AL defaults with ``constantVarianceWeighting: false`` (and
    ``calculateKernelUncertainty: true`` to keep the covariance in kernel.fits)."""
    products, truth = _pair(tmp_path, {**BRIGHT, "shape": [2048, 2048]},
                            {"constantVarianceWeighting": False,
                             "calculateKernelUncertainty": True})
    kernel = io.read_kernel(products["kernel.fits"])
    accuracy = io.read_json(products["metrics.json"])["kernel_accuracy"]
    assert accuracy["covariance"] == "describes the error"
    # 5 per 128² cell and 1000 candidates: the stars left out are counted and named
    assert accuracy["unused"]["over_max_candidates"] > 0
    assert "beyond detection.max_candidates" in accuracy["note"]
    positions = accuracy["positions"]
    assert list(positions) == ["centre", "lower_left", "lower_right", "upper_left",
                               "upper_right"]
    for name, p in positions.items():
        l1 = relative_l1(kernel, truth.kernel, p["x"], p["y"])
        # E|e| = σ sqrt(2/π) per pixel for an unbiased Gaussian error (metrics.json's
        # expected_l1; measured 0.6 % centre, up to 1.6 % at the corners)
        print(name, (p["x"], p["y"]), l1, p["expected_l1"])
        assert l1 < 0.03  # measured 0.8 % (centre), 1.4 % (worst corner)
        # the error is what the covariance says, not a bias several times larger
        assert l1 < 2.0 * p["expected_l1"]


def test_constant_weights_with_noise_corrected_candidates_reach_3_percent(tmp_path):
    """ip_diffim's constant weights within each stamp, but the spatial fit weighs each
    candidate by the variance under its model (``kernel_fit.candidate_weights:
    noise_corrected``): on the same 2048² pair the L1 goes from 1.7 % / 3.4 % (ip_diffim's
    candidate weights) to 0.8 % / 1.8 %; the covariance is then labelled approximate
    (it predicts 1.5 % / 3.8 %, about twice the error: on the safe side)."""
    products, truth = _pair(tmp_path, {**BRIGHT, "shape": [2048, 2048]},
                            {"calculateKernelUncertainty": True},
                            {"kernel_fit": {"candidate_weights": "noise_corrected"}})
    kernel = io.read_kernel(products["kernel.fits"])
    accuracy = io.read_json(products["metrics.json"])["kernel_accuracy"]
    assert accuracy["covariance"] == "approximate"
    for name, p in accuracy["positions"].items():
        l1 = relative_l1(kernel, truth.kernel, p["x"], p["y"])
        print(name, l1, p["expected_l1"])
        assert l1 < 0.03  # measured 0.8 % (centre), 1.8 % (worst corner)
        assert l1 < 1.2 * p["expected_l1"]  # the approximation errs on the safe side


def test_every_stamp_with_ip_diffim_weights_reaches_3_percent(tmp_path):
    """ip_diffim's constant weights, but every stamp instead of the top 5 per cell.

    Every stamp among the 3000 brightest detections (of ~5400 selected): the spatial
    model's error falls about as 1/√(candidates), and 894 → 2913 candidates take the L1
    from 1.7 % / 3.4 % to 1.1 % / 1.8 % (centre / worst corner) at about twice the
    fitting time, with ip_diffim's weights kept, so the residuals of a real pair (which
    those weights serve best) are unchanged where no cell has more than 5 GOOD stars.
    """
    products, truth = _pair(tmp_path, {**BRIGHT, "shape": [2048, 2048]},
                            {"nStarPerCell": -1}, max_candidates=3000)
    kernel = io.read_kernel(products["kernel.fits"])
    metrics = io.read_json(products["metrics.json"])
    assert metrics["candidates"]["used_in_final_fit"] > 2000  # not 5 per cell (≤ 1280)
    assert metrics["kernel_accuracy"]["unused"]["good_not_active"] == 0
    for name, p in metrics["kernel_accuracy"]["positions"].items():
        l1 = relative_l1(kernel, truth.kernel, p["x"], p["y"])
        print(name, l1, p["expected_l1"])
        # measured 1.1 % (centre), 1.8 % (worst corner); with constant weights the
        # covariance under-predicts (lower bound), so the margin is the 5-per-cell run's
        # 3.4 % scaled by √(894/2913): 1.9 %, well under 3 %
        assert l1 < 0.03


def test_equal_noise_template_keeps_the_flux_scale(tmp_path):
    """Template as noisy as the science (sky 200 in both): kernel sum within 0.1 %.

    The template noise enters the normal matrix as a ridge N (psfmatch.noise_bias); for
    AL's smooth basis its effect on the kernel sum is 0.002 % here (0.01 % on the faint
    demo pair), far below 0.1 %, so no correction is applied. The fit's own σ is 0.01 %.
    """
    products, truth = _pair(tmp_path, {**BRIGHT, "shape": [1024, 1024], "sky_template": 200.0},
                            {"calculateKernelUncertainty": True})
    metrics = io.read_json(products["metrics.json"])
    sigma = metrics["uncertainty"]["kernel_sum_sigma"] / truth.photometric_scale
    assert sigma < 3e-4  # the test can resolve a 0.1 % bias
    assert abs(metrics["kernel_sum"] / truth.photometric_scale - 1.0) <= 1e-3  # measured −0.01 %
