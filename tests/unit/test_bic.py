"""BIC votes for the Alard–Lupton degrees (docs/basis.md#bic-degrees)."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.bic import choose_degrees_by_bic
from psfmatch.candidates import FitOptions, ResidualLimits

HALF = 7
STAMP = 4 * HALF + 5
FIT = FitOptions(fit_background=False, constant_variance_weighting=True,
                 iterate_single_kernel=False, check_condition_number=False,
                 max_condition_number=1e99, condition_number_type="EIGENVALUE",
                 residuals=ResidualLimits(clipping=False, mean_max=1.0, std_max=10.0,
                                          bad_bits=0, core_radius=None))


def _stamps(kernel, rng, n=12, noise=2.0):
    yy, xx = np.mgrid[0:STAMP, 0:STAMP].astype(float)
    c = (STAMP - 1) / 2
    templates, sciences = [], []
    for _ in range(n):
        t = np.zeros((STAMP, STAMP))
        for dx, dy, flux in ((0.0, 0.0, 2e4), (*rng.uniform(-4, 4, 2), 6e3)):
            t += flux * np.exp(-((xx - c - dx) ** 2 + (yy - c - dy) ** 2) / (2 * 1.3**2))
        win = np.lib.stride_tricks.sliding_window_view(t, kernel.shape)
        s = np.zeros_like(t)
        s[HALF:-HALF, HALF:-HALF] = np.einsum("yxij,ij->yx", win, kernel)
        templates.append(t)
        sciences.append(s + rng.normal(0.0, noise, s.shape))
    t, s = np.array(templates), np.array(sciences)
    zeros = np.zeros(t.shape, dtype=np.int32)
    return (t, np.zeros_like(t), zeros), (s, np.full(s.shape, noise**2), zeros)


def _kernel(sigma, dx=0.0, skew=0.0):
    v, u = np.mgrid[-HALF : HALF + 1, -HALF : HALF + 1].astype(float)
    k = np.exp(-((u - dx) ** 2 + v**2) / (2 * sigma**2)) * (1 + skew * u / HALF) ** 3
    return k / k.sum()


def test_a_plain_gaussian_votes_for_the_lowest_degrees():
    """Every tuple spans a centred Gaussian of the middle width: the penalty decides."""
    rng = np.random.default_rng(4)
    t, s = _stamps(_kernel(1.5), rng)
    choice = choose_degrees_by_bic(t, s, sigmas=(0.7, 1.5, 3.0), max_degrees=(4, 2, 2),
                                   half_width=HALF, options=FIT)
    assert choice.degrees == (1, 1, 1)
    assert choice.n_voters == 12
    assert sum(choice.votes.values()) == 12


def test_a_skewed_kernel_votes_for_more_terms():
    """A shifted, skewed kernel needs the higher polynomial terms (its χ² drop beats k ln n)."""
    rng = np.random.default_rng(5)
    t, s = _stamps(_kernel(1.2, dx=1.0, skew=0.6), rng)
    choice = choose_degrees_by_bic(t, s, sigmas=(0.7, 1.5, 3.0), max_degrees=(4, 2, 2),
                                   half_width=HALF, options=FIT)
    assert sum(choice.degrees) > 3, choice
    assert choice.votes[",".join(map(str, choice.degrees))] >= 6  # a clear majority of 12


def test_no_good_fit_raises():
    rng = np.random.default_rng(6)
    t, s = _stamps(_kernel(1.5), rng, n=2)
    bad = (t[0], t[1], t[2]), (s[0] * np.nan, s[1], s[2])
    with pytest.raises(ValueError, match="no candidate has a good fit"):
        choose_degrees_by_bic(*bad, sigmas=(0.7, 1.5), max_degrees=(2, 1), half_width=HALF,
                              options=FIT)
