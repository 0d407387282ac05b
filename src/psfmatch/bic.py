"""Choice of the Alard–Lupton polynomial degrees by BIC votes (docs/basis.md#bic-degrees).

For every degree tuple :math:`(d_1, …, d_G)` with :math:`1 \\le d_j \\le D_j`
(``alardDegGauss`` = :math:`D`), the AL basis with those degrees is built (same
sigmas and size) and every candidate given is fitted. Each candidate whose fit is
GOOD computes, on the valid region of its difference stamp,

.. math::  \\mathrm{BIC} = \\chi^2 + k \\ln n, \\qquad \\chi^2 = \\sum D^2/\\mathrm{var},

(``k`` basis kernels, ``n`` pixels used) and votes for its minimum-BIC tuple; the
most common tuple wins. ip_diffim only ever did this in the removed
``ImagePsfMatchTask``, for exactly three Gaussians; here any number works, and ties
go to the tuple with fewer basis kernels (then the lexicographically smaller one).
ip_diffim also required at least three distinct tuples to receive votes; that rule is
not kept (a unanimous vote is the clearest outcome).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from psfmatch.basis import alard_lupton_basis
from psfmatch.candidates import FitOptions, Stamps, fit_single_kernels
from psfmatch.fit import difference_stamp

__all__ = ["BicChoice", "choose_degrees_by_bic"]


@dataclass(frozen=True)
class BicChoice:
    """Winning degrees and the vote count of every tuple that got votes."""

    degrees: tuple[int, ...]
    votes: dict[str, int]
    n_voters: int

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary (for ``metrics.json``)."""
        return {"degrees": list(self.degrees), "votes": dict(self.votes),
                "n_voters": self.n_voters}


def choose_degrees_by_bic(
    template: Stamps,
    science: Stamps,
    *,
    sigmas: Sequence[float],
    max_degrees: Sequence[int],
    half_width: int,
    options: FitOptions,
) -> BicChoice:
    """Vote for the AL degrees (module docstring).

    Parameters
    ----------
    template, science : tuple of ndarray
        ``(image, variance, mask)`` stacks of the voting candidates.
    sigmas, max_degrees : sequences
        AL sigmas and the largest degree of each Gaussian.
    half_width : int
        Kernel half-width.
    options : FitOptions
        Of the single-kernel fits (clipping, weighting, background, …); its
        ``residuals.bad_bits`` are also left out of the χ² sums.

    Raises
    ------
    ValueError
        No candidate has a GOOD fit with any tuple.
    """
    bad_bits = options.residuals.bad_bits
    ranges = [range(1, int(d) + 1) for d in max_degrees]
    n = template[0].shape[0]
    best_bic = np.full(n, np.inf)
    best_tuple: list[tuple[int, ...] | None] = [None] * n
    sizes: dict[tuple[int, ...], int] = {}
    for degrees in itertools.product(*ranges):
        basis = alard_lupton_basis(half_width=half_width, sigmas=sigmas, degrees=degrees)
        sizes[degrees] = basis.shape[0]
        fits = fit_single_kernels(template, science, basis, options, progress_every=0)
        for i in np.flatnonzero(fits.good):
            t_stamp = (template[0][i], template[1][i], template[2][i])
            s_stamp = (science[0][i], science[1][i], science[2][i])
            diff, var, mask = difference_stamp(t_stamp, s_stamp, fits.kernels[i],
                                               float(fits.background[i]))
            use = ((mask & bad_bits) == 0) & (var > 0) & np.isfinite(diff)
            n_pix = int(use.sum())
            if n_pix == 0:
                continue
            bic = float(np.sum(diff[use] ** 2 / var[use])) + basis.shape[0] * np.log(n_pix)
            if bic < best_bic[i]:
                best_bic[i], best_tuple[i] = bic, degrees
    counts = Counter(t for t in best_tuple if t is not None)
    if not counts:
        msg = "no candidate has a good fit with any degree tuple; cannot choose by BIC"
        raise ValueError(msg)
    winner = min(counts, key=lambda t: (-counts[t], sizes[t], t))
    votes = {",".join(map(str, t)): c for t, c in sorted(counts.items())}
    return BicChoice(degrees=tuple(int(d) for d in winner), votes=votes,
                     n_voters=int(sum(counts.values())))
