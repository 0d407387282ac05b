"""DIA sources on a difference made with the *fitted* kernel (the workflow's own products).

One 1024² simulated pair with 60 transients and 30 variables goes through the kernel
steps in-process (``chain.run_pair``); the DIA core then runs on ``difference.fits`` and
``matched.fits`` with the PSF the workflow knows: a Gaussian of the science FWHM that
``psf.json`` records (adaptive moments, which include the pixel: the pixel box is taken
out before the pixel-integrated Gaussian is drawn). The kernel candidates
(``final.parquet``, status GOOD) are the sources of the bad-subtraction ratio.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from psfmatch import io
from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.dia import DiaOptions, detect_and_measure, forced_psf_flux, gaussian_psf_image
from psfmatch.steps.simulate import simulate

from .chain import run_pair

pytestmark = pytest.mark.slow

SIMULATION = {"seed": 7, "shape": [1024, 1024], "n_transients": 60, "n_variables": 30,
              "n_cosmic_rays": 0, "transient_flux_range": [300.0, 30000.0]}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    work = tmp_path_factory.mktemp("dia")
    template, science = work / "template.fits", work / "science.fits"
    simulate(simulation=SIMULATION, template_path=template, science_path=science,
             truth_path=work / "truth.json", sources_path=work / "sources.parquet")
    paths = run_pair(work, template, science)
    fwhm = io.read_json(paths["psf.json"])["science"]["fwhm"]
    sigma = math.sqrt((fwhm / SIGMA_TO_FWHM) ** 2 - 1.0 / 12.0)
    psf = gaussian_psf_image(SIGMA_TO_FWHM * sigma, size=25)
    diff = io.read_exposure(paths["difference.fits"])
    matched = io.read_exposure(paths["matched.fits"])
    sci = io.read_exposure(science)
    cand = io.read_table(paths["final.parquet"]).columns
    good = cand["status"] == "GOOD"
    cat = detect_and_measure(diff, psf, science=sci, template=matched, wcs=sci.wcs,
                             gate_sources=(cand["x"][good], cand["y"][good]), label="sim7")
    src = io.read_table(work / "sources.parquet").columns
    return cat, diff, matched, psf, src


def test_fitted_difference_recovery(fitted):
    cat, diff, matched, psf, src = fitted
    c = cat.columns
    assert cat.metadata["footprint_ratio_mean"] < DiaOptions().max_footprint_ratio
    sel = np.isin(src["kind"], ["transient", "variable"])
    x, y, flux = src["x"][sel], src["y"][sel], src["flux_difference"][sel]
    near = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(near, np.inf)
    bad = (diff.mask & diff.plane_bitmask(DiaOptions().exclude_planes)) != 0
    col, row = np.rint(x).astype(int), np.rint(y).astype(int)
    clean = (near.min(axis=1) > 15.0) & ~bad[row, col]
    _, err = forced_psf_flux(diff, psf, x, y, template=matched)
    bright = clean & (np.abs(flux) / err >= 10)
    dist = np.hypot(c["x"][None, :] - x[:, None], c["y"][None, :] - y[:, None])
    j = dist.argmin(axis=1)
    found = dist[np.arange(x.size), j] < 3.0
    assert bright.sum() >= 40
    # a true S/N >= 10 source is missed with probability Phi(-5) ~ 3e-7
    assert found[bright].mean() >= 0.95
    ok = bright & found
    # statistical error of the median ~1.25 * 5 % / sqrt(40) ~ 1 %
    assert np.median(c["psf_flux"][j[ok]] / flux[ok]) == pytest.approx(1.0, abs=0.02)
    np.testing.assert_array_equal(c["is_negative"][j[ok]], flux[ok] < 0)
    # purity: every unflagged detection is an injected source (noise: 0.3 per 1e6 px)
    matched_rows = np.zeros(len(cat), bool)
    matched_rows[j[found]] = True
    unflagged = (c["flags"] & 0xFFFF) == 0
    assert np.count_nonzero(unflagged & ~matched_rows) <= 1
