"""Alard–Lupton recovery of a known spatially varying kernel on a simulated 2048² pair.

The pair is bright enough (gain 10, stars from 1e4 ADU) that the recovered kernel is
limited by the method, not by photon noise; all good candidates are used in the spatial
fit (``nStarPerCell: -1``). On fainter fields the same code is noise-limited: see the
benchmark notes in README.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch import io, synth
from psfmatch.diagnostics import STATS_BAD_PLANES
from psfmatch.steps.simulate import simulate

from .chain import run_pair

pytestmark = pytest.mark.slow

SIMULATION = {"seed": 1, "shape": [2048, 2048], "star_density": 3000.0, "flux_min": 1.0e4,
              "gain": 10.0}


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    work = tmp_path_factory.mktemp("al")
    template, science, truth = work / "template.fits", work / "science.fits", work / "truth.json"
    simulate(simulation=SIMULATION, template_path=template, science_path=science,
                   truth_path=truth, sources_path=work / "sources.parquet")
    paths = run_pair(work, template, science, psf_match_overrides={"nStarPerCell": -1})
    return paths, synth.Truth.from_dict(io.read_json(truth)), science


def _positions(shape):
    ny, nx = shape
    return {"centre": ((nx - 1) / 2, (ny - 1) / 2), "lower left": (50, 50),
            "lower right": (nx - 50, 50), "upper left": (50, ny - 50),
            "upper right": (nx - 50, ny - 50)}


def test_kernel_sum_within_0p2_percent(products):
    paths, truth, _ = products
    kernel = io.read_kernel(paths["kernel.fits"])
    assert kernel.kernel_sum == pytest.approx(truth.photometric_scale, rel=2e-3)


@pytest.mark.parametrize("where", ["centre", "lower left", "lower right", "upper left", "upper right"])
def test_kernel_image_relative_l1_below_3_percent(products, where):
    paths, truth, _ = products
    kernel = io.read_kernel(paths["kernel.fits"])
    x, y = _positions(SIMULATION["shape"])[where]
    fitted = kernel.image_at(x, y)
    true = truth.kernel.kernel_at(x, y)
    crop = (true.shape[0] - fitted.shape[0]) // 2
    true_cropped = true[crop:-crop, crop:-crop] if crop else true
    # The truth outside the fitted kernel's footprint is < 1e-10 of its sum here.
    assert abs(1 - true_cropped.sum() / true.sum()) < 1e-8
    l1 = np.abs(fitted - true_cropped).sum() / np.abs(true_cropped).sum()
    assert l1 < 0.03, f"relative L1 at the {where}: {l1:.4f}"


def test_star_residuals_match_the_true_kernel(products):
    """std(D/σ) on the used candidates' stamps is within 5 % of the truth kernel's."""
    paths, truth, science_path = products
    difference = io.read_exposure(paths["difference.fits"])
    science = io.read_exposure(science_path)
    template = io.read_exposure(paths["warped.fits"])
    ny, nx = science.shape
    clean = np.where(np.isfinite(template.image), template.image, 0.0)
    y, x = np.mgrid[0:ny, 0:nx]
    true_diff = (science.image - truth.kernel.apply(clean, xy0=science.xy0)
                 - truth.background_at(x + science.xy0[0], y + science.xy0[1]))
    table = io.read_table(paths["final.parquet"]).columns
    used = table["status"] == "GOOD"
    bad = difference.plane_bitmask(STATS_BAD_PLANES)
    sigma = np.sqrt(difference.variance)
    fitted_z, true_z = [], []
    for x0, y0, x1, y1 in zip(*(table[c][used] for c in
                                ("stamp_x0", "stamp_y0", "stamp_x1", "stamp_y1")), strict=True):
        box = (slice(y0 - science.xy0[1], y1 + 1 - science.xy0[1]),
               slice(x0 - science.xy0[0], x1 + 1 - science.xy0[0]))
        good = (difference.mask[box] & bad) == 0
        fitted_z.append((difference.image[box] / sigma[box])[good])
        true_z.append((true_diff[box] / sigma[box])[good])
    fitted_std = np.concatenate(fitted_z).std()
    true_std = np.concatenate(true_z).std()
    assert fitted_std == pytest.approx(true_std, rel=0.05), (fitted_std, true_std)
