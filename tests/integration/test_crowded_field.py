"""A crowded field that fails like real ones, and what fixes it.

:mod:`psfmatch.synth_crowded`: Moffat wings, ~24 000 stars on 768² (blends and a sea
of unresolved stars), a kernel with a Moffat halo whose width, ellipticity and
sub-pixel centre vary *non-linearly* over the field, and saturated stars clipped in
both images with no mask or keyword. With the production defaults (spatial order 1,
no saturation mask) the residuals at stars are ~10 % above the true-kernel oracle and
the 5σ residual detections are ~5× the oracle's; the kernel sum is +0.8 % off (the
flat-topped stars are the brightest candidates). Estimating the saturation level from
the pile-up of the brightest peaks (:mod:`psfmatch.saturation`) and choosing the
spatial order by cross-validation over the candidates (:mod:`psfmatch.spatial_order`)
brings both to the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch import io
from psfmatch.saturation import estimate_saturation_level, saturation_mask
from psfmatch.synth.crowded import CrowdedParams, make_crowded_pair

from .chain import run_pair
from .oracle import compare
from .prototypes import auto_order, patched

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    work = tmp_path_factory.mktemp("crowded")
    pair = make_crowded_pair(CrowdedParams())
    return work, pair


def _write(work, pair, *, mask_saturation):
    paths = {r: work / f"{r}.fits" for r in ("template", "science")}
    for role in ("template", "science"):
        exposure = getattr(pair, role)
        if mask_saturation:
            est = estimate_saturation_level(exposure.image)
            assert est.level == pytest.approx(pair.params.saturation)
            mask = exposure.mask.copy()
            mask[saturation_mask(exposure.image, est.level)] |= exposure.plane_bitmask(["SAT"])
            exposure = exposure.with_(mask=mask)
        io.write_exposure(paths[role], exposure)
    return paths


def _compare(products, paths, pair):
    return compare(products, paths["science"], pair, pair.stars, fwhm=pair.params.science_fwhm,
                   shift=pair.params.kernel_shift, flux_min=3000.0, saturated=pair.saturated)


def test_defaults_fail_like_a_real_crowded_field(crowded):
    work, pair = crowded
    (work / "before").mkdir()
    paths = _write(work / "before", pair, mask_saturation=False)
    products = run_pair(work / "before", paths["template"], paths["science"])
    result = _compare(products, paths, pair)
    print(result)
    assert result["oracle_ratio"] > 1.05  # measured 1.108
    assert result["det5_fit"] > 3 * result["det5_true"]  # measured 217 vs 38
    assert result["kernel_sum_error"] > 3e-3  # measured +0.80 %


def test_saturation_from_data_and_cross_validated_order_reach_the_oracle(crowded):
    work, pair = crowded
    (work / "after").mkdir()
    paths = _write(work / "after", pair, mask_saturation=True)
    records: list = []
    with patched(auto_order, records=records):
        products = run_pair(work / "after", paths["template"], paths["science"])
    result = _compare(products, paths, pair)
    print(result, [r["order"] for r in records])
    assert all(r["order"] >= 2 for r in records)  # measured 4 every time
    assert result["oracle_ratio"] <= 1.05  # measured 1.0014
    # measured 17 vs 14: within Poisson scatter of a few spurious blobs
    assert result["det5_fit"] <= 1.5 * result["det5_true"] + 3
    assert abs(result["kernel_sum_error"]) < 2e-3  # measured −0.08 %
    assert np.isfinite(result["n_star_pixels"])
