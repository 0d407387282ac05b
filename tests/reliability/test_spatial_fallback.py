"""An ill-posed spatial system lowers its orders (logged, in metrics.json) or fails typed.

Never NaNs in the difference image.
"""

from __future__ import annotations

import numpy as np
import pytest
from tests.integration.chain import run_pair

from psfmatch import io, synth
from psfmatch.spatial import SpatialFitError, SpatialFunction, fit_spatial_reducing_order

BBOX = (0, 0, 1023, 1023)


def _normal_equations(n_cand: int, n_basis: int, rng: np.random.Generator):
    """Well-conditioned local systems (Q = A^T A with a random 50 x n design)."""
    q, w = [], []
    for _ in range(n_cand):
        a = rng.normal(size=(50, n_basis))
        q.append(a.T @ a)
        w.append(a.T @ rng.normal(size=50))
    return np.array(q), np.array(w)


def test_well_posed_system_keeps_the_requested_orders():
    rng = np.random.default_rng(1)
    centres = list(zip(rng.uniform(0, 1023, 40), rng.uniform(0, 1023, 40), strict=True))
    q, w = _normal_equations(40, 4, rng)
    out = fit_spatial_reducing_order(
        centres, q, w, n_basis=3, kernel_function=SpatialFunction(2, "chebyshev1", BBOX),
        background_function=SpatialFunction(1, "chebyshev1", BBOX), constant_first_term=True)
    assert not out.reduced
    assert (out.kernel_function.order, out.background_function.order) == (2, 1)


def test_candidates_at_one_position_fall_back_to_constant_functions():
    # Every candidate at the same place: any non-constant term is exactly degenerate.
    rng = np.random.default_rng(2)
    q, w = _normal_equations(6, 3, rng)
    out = fit_spatial_reducing_order(
        [(100.0, 100.0)] * 6, q, w, n_basis=3, kernel_function=SpatialFunction(2, "chebyshev1", BBOX),
        background_function=None, constant_first_term=True)
    assert out.reduced and out.kernel_function.order == 0
    assert [a["kernel_order"] for a in out.attempts] == [2, 1, 0]
    assert all(a["refused"] for a in out.attempts[:-1]) and out.attempts[-1]["refused"] is None
    assert np.all(np.isfinite(out.fit.kernel_coefficients))


def test_unsolvable_even_at_order_zero_is_a_typed_error():
    rng = np.random.default_rng(3)
    centres = list(zip(rng.uniform(0, 1023, 10), rng.uniform(0, 1023, 10), strict=True))
    q, w = _normal_equations(10, 3, rng)
    w[4, 1] = np.nan  # one corrupt candidate poisons every solution
    with pytest.raises(SpatialFitError, match="ill-posed at every order tried"):
        fit_spatial_reducing_order(
            centres, q, w, n_basis=3, kernel_function=SpatialFunction(1, "chebyshev1", BBOX),
            background_function=None, constant_first_term=True)


@pytest.mark.slow
def test_candidates_in_one_corner_with_order_two(tmp_path):
    """Stars usable only in a 250² corner of a 1024² field, spatialKernelOrder 2."""
    pair = synth.make_pair(synth.SimulationParams(seed=5, shape=(1024, 1024), star_density=6000.0,
                                                  flux_min=2000.0))
    science = pair.science
    outside = np.ones(science.shape, dtype=bool)
    outside[:250, :250] = False
    mask = science.mask | np.where(outside, np.int32(1 << science.mask_planes["BAD"]), np.int32(0))
    t = io.write_exposure(tmp_path / "template.fits", pair.template)
    s = io.write_exposure(tmp_path / "science.fits", science.with_(mask=mask))
    (tmp_path / "run").mkdir()
    p = run_pair(tmp_path / "run", t, s, psf_match_overrides={"spatialKernelOrder": 2})
    metrics = io.read_json(p["metrics.json"])
    orders = metrics["spatial_orders"]
    assert metrics["verdict"] == "reduced spatial order"
    assert orders["requested"] == {"kernel": 2, "background": 2}
    assert orders["used"]["kernel"] < 2
    assert orders["attempts"][0]["geometric_condition"] > 1e4
    difference = io.read_exposure(p["difference.fits"])
    assert not np.isnan(difference.image[~difference.plane("NO_DATA")]).any()
    # Inside the corner the fit is as good as anywhere: clipped std of D/sigma near 1.
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.1
