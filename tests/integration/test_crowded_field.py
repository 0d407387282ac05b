"""A crowded field that fails like real ones, and the defaults that fix it.

:func:`psfmatch.synth.make_crowded_pair`: Moffat wings, ~24 000 stars on 768² (blends
and a sea of unresolved stars), a kernel with a Moffat halo whose width, ellipticity
and sub-pixel centre vary *non-linearly* over the field (3 × 3 anchors), and saturated
stars clipped in both images with no mask or keyword.

Before (ip_diffim's behaviour: ``kernel_fit.spatial_order: configured``, i.e. the
production order 1, and ``kernel_fit.estimate_saturation: false``): std(D/σ) at stars
~10 % above the true-kernel oracle, 5σ residual detections ~5× the oracle's, kernel
sum +0.8 % (the flat-topped stars are the brightest candidates). After (the shipped
defaults): ingest finds the clip level from the pile-up of the brightest peaks and
flags SAT; the spatial order is raised by cross-validation over the candidates; both
numbers come to the oracle. Both images go through the real ``ingest`` step.
"""

from __future__ import annotations

import pytest

from psfmatch import io
from psfmatch.steps.ingest import ingest
from psfmatch.synth import CrowdedParams, make_crowded_pair

from .chain import run_pair
from .oracle import compare

pytestmark = pytest.mark.slow

BEFORE = {"kernel_fit": {"spatial_order": "configured", "estimate_saturation": False}}


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    work = tmp_path_factory.mktemp("crowded")
    pair = make_crowded_pair(CrowdedParams())
    raw = {role: io.write_exposure(work / f"raw_{role}.fits", getattr(pair, role))
           for role in ("template", "science")}
    return work, pair, raw


def _run(crowded, name, config):
    work, pair, raw = crowded
    (work / name).mkdir()
    paths = {}
    for role in ("template", "science"):
        paths[role] = work / name / f"{role}.fits"
        ingest(inputs={"image": str(raw[role])}, output_path=paths[role], label=role,
               config=config)
    products = run_pair(work / name, paths["template"], paths["science"],
                        config_overrides=config)
    result = compare(products, paths["science"], pair, pair.stars,
                     fwhm=pair.params.science_fwhm, shift=pair.params.kernel_shift,
                     flux_min=3000.0, saturated=pair.saturated)
    return result, io.read_json(products["metrics.json"])


def test_ip_diffim_behaviour_fails_like_a_real_crowded_field(crowded):
    result, metrics = _run(crowded, "before", BEFORE)
    print("before", {k: v for k, v in result.items() if k != "kernel"})
    assert metrics["spatial_orders"]["used"]["kernel"] == 1
    assert metrics["inputs"] == {}  # nothing says the images are saturated
    # measured 1.108: ~10 % above the oracle at the stars, far beyond the noise (the
    # oracle ratio of a correct kernel scatters by < 0.5 % on these ~10⁵ star pixels)
    assert result["oracle_ratio"] > 1.05
    # measured 217 against 38 for the true kernel
    assert result["det5_fit"] > 3 * result["det5_true"]
    # measured +0.80 %; the fit's own 1σ is ~0.05 %
    assert result["kernel_sum_error"] > 3e-3


def test_defaults_reach_the_oracle_on_it(crowded):
    result, metrics = _run(crowded, "after", {})
    print("after", {k: v for k, v in result.items() if k != "kernel"},
          metrics["spatial_orders"]["search"])
    # the clip level (30 000 ADU above the sky) was found in both images
    for role in ("science", "template"):
        assert "30000" in metrics["inputs"][role]["saturation"]
    search = metrics["spatial_orders"]["search"]
    assert search["orders"][0] == 1  # never below the configured order
    assert metrics["spatial_orders"]["used"]["kernel"] >= 2  # measured 4 (the maximum)
    assert result["oracle_ratio"] <= 1.05  # measured 1.0014
    # measured 17 vs 14: a few spurious blobs more than the oracle (Poisson scatter of
    # the oracle's own count is ~4)
    assert result["det5_fit"] <= 1.5 * result["det5_true"] + 3
    assert abs(result["kernel_sum_error"]) < 2e-3  # measured −0.08 %
