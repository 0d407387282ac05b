"""Principal-component spatial basis from single-candidate kernels (docs/fitting.md#pca-basis).

With ``usePcaForSpatialKernel`` the spatial model is not built on the fitting basis
(27 AL kernels, or 441 delta functions) but on a handful of *eigen-kernels* of the
good candidates' own kernels: the candidates are refitted with that basis and the
spatial fit then has ``1 + (n_pc − 1)·n_terms`` unknowns. The first basis kernel (the
mean kernel, or the first eigen-kernel) has unit sum and a constant coefficient, the
others sum to zero, so the kernel sum is the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from psfmatch.basis import renormalize_basis
from psfmatch.candidates import (
    FitOptions,
    Stamps,
    active_set,
    clip_kernel_sums,
    fit_single_kernels,
    kernel_sum_reasons,
    reject,
)
from psfmatch.errors import InsufficientCandidatesError, PsfMatchError

__all__ = ["MAX_EIGEN_IMAGES", "PcaBasis", "PcaRefit", "pca_basis", "pca_refit"]

logger = logging.getLogger("psfmatch.pca")

#: afw's ``ImagePca`` forms at most this many eigen-images.
MAX_EIGEN_IMAGES = 100


@dataclass(frozen=True)
class PcaBasis:
    """Outcome of :func:`pca_basis`.

    Attributes
    ----------
    basis : ndarray, shape (n_pc, k, k)
        Renormalised basis: element 0 sums to 1, the others to 0 with unit L2 norm.
    eigenvalues : ndarray
        All eigenvalues of the (mean-subtracted) kernel Gram matrix, decreasing.
    n_kernels : int
        Number of candidate kernels that entered the PCA.
    mean_first : bool
        Element 0 is the mean kernel (``subtractMeanForPca``).
    """

    basis: np.ndarray
    eigenvalues: np.ndarray
    n_kernels: int
    mean_first: bool

    @property
    def explained_fraction(self) -> float:
        """Fraction of the eigenvalue sum carried by the kept eigen-kernels."""
        total = float(self.eigenvalues.sum())
        if total <= 0:
            return 1.0
        n_eig = self.basis.shape[0] - (1 if self.mean_first else 0)
        return float(self.eigenvalues[:n_eig].sum()) / total


def pca_basis(kernels: np.ndarray, *, subtract_mean: bool, n_components: int) -> PcaBasis:
    """ip_diffim's ``_createPcaBasis`` without the refit (docs/fitting.md#pca-basis).

    1. Each kernel is divided by its sum (kernels with a zero or non-finite sum are
       skipped, as candidates that throw are).
    2. With ``subtract_mean`` the mean image :math:`\\mu` is subtracted from every one.
    3. With :math:`N` images :math:`I_j`, :math:`R_{ij} = \\langle I_i, I_j\\rangle / N`
       is eigen-decomposed, eigenvalues sorted decreasing, and eigen-image
       :math:`E_k = \\sum_j Q_{jk} I_j` formed (at most 100).
    4. Every eigen-image is scaled so that its value of largest magnitude is +1.
    5. The list is ``[μ]`` (if subtracted) followed by the eigen-images; its first
       ``n_components`` entries are kept, dropping any containing NaN (an eigen-image of
       an exactly zero eigenvalue is all zeros and cannot be scaled), then
       :func:`~psfmatch.basis.renormalize_basis` is applied.

    Deviation: ip_diffim raises when the eigenvalues sum to 0 (all candidate kernels
    identical after normalisation); here the basis is then ``[μ]`` alone, which
    represents every candidate exactly.

    Raises
    ------
    ValueError
        No kernel with a usable sum, or ``n_components < 1``.
    """
    if n_components < 1:
        msg = f"numPrincipalComponents must be >= 1, got {n_components}"
        raise ValueError(msg)
    kernels = np.asarray(kernels, dtype=np.float64)
    sums = kernels.sum(axis=(1, 2))
    usable = np.isfinite(sums) & (sums != 0) & np.all(np.isfinite(kernels), axis=(1, 2))
    if not usable.any():
        msg = "no candidate kernel with a finite, non-zero sum for the PCA basis"
        raise ValueError(msg)
    images = kernels[usable] / sums[usable, None, None]
    n, ky, kx = images.shape
    flat = images.reshape(n, ky * kx)
    mean = flat.mean(axis=0)
    if subtract_mean:
        flat = flat - mean
    gram = flat @ flat.T / n
    eigenvalues, vectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    if n == 1 and not subtract_mean:
        eigen_images, eigenvalues = flat.copy(), np.array([1.0])
    else:
        eigen_images = vectors[:, :MAX_EIGEN_IMAGES].T @ flat
    scaled = []
    for image in eigen_images:
        extreme = image[np.argmax(np.abs(image))]
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled.append(image / extreme if extreme != 0 else np.full_like(image, np.nan))
    candidates = ([mean] if subtract_mean else []) + scaled
    kept = [c for c in candidates[:n_components] if np.all(np.isfinite(c))]
    if not kept:
        msg = "every PCA basis kernel contains NaN"
        raise ValueError(msg)
    basis = renormalize_basis(np.array(kept).reshape(len(kept), ky, kx))
    return PcaBasis(basis=basis, eigenvalues=eigenvalues, n_kernels=n,
                    mean_first=subtract_mean)


@dataclass(frozen=True)
class PcaRefit:
    """Outcome of :func:`pca_refit`.

    ``table`` is the candidate table with the refit's rejections (stages ``pca`` and
    ``ksum``); ``basis`` the eigen-kernels; ``normal_matrix``/``normal_vector`` the
    refitted candidates' normal equations, row ``i`` belonging to candidate
    ``candidate_ids[i]``; ``description`` the basis as recorded in ``kernel.fits``.
    """

    table: dict[str, np.ndarray]
    basis: np.ndarray
    normal_matrix: np.ndarray
    normal_vector: np.ndarray
    candidate_ids: list[int]
    description: dict[str, Any]


def pca_refit(
    table: Mapping[str, np.ndarray],
    kernels: np.ndarray,
    kernel_ids: np.ndarray,
    template: Stamps,
    science: Stamps,
    stamp_ids: np.ndarray,
    cfg: Any,
    *,
    options: FitOptions,
    iteration: int,
    fitting_basis: Mapping[str, Any],
) -> PcaRefit:
    """PCA basis of the active candidates' kernels, refitted until the refit rejects nothing.

    Each pass takes the active set (``cfg.n_star_per_cell`` GOOD candidates per cell),
    forms the eigen-kernels of their single kernels (``kernels[i]`` belongs to
    ``kernel_ids[i]``; ``cfg.subtract_mean_for_pca``, ``cfg.num_principal_components``)
    and refits those candidates with them (``options``, no regularization). Candidates
    whose refit fails its residual clipping are rejected (stage ``pca``), the kernel sums
    are clipped again (``cfg.max_ksum_sigma``, ``cfg.kernel_sum_clipping``; stage
    ``ksum``) and the next pass starts, as ip_diffim's ``_solve`` restarts on a PCA
    rejection.

    Raises
    ------
    InsufficientCandidatesError
        No active candidate is left, the PCA cannot be formed, or the kernel-sum
        statistics fail.
    """
    stamp_row = {int(i): p for p, i in enumerate(stamp_ids)}
    kernel_row = {int(i): p for p, i in enumerate(kernel_ids)}
    table = {k: np.array(v, copy=True) for k, v in table.items()}
    n_pass = 0
    while True:
        n_pass += 1
        active = active_set(table["cell"], table["rank"], table["status"] == "GOOD",
                            cfg.n_star_per_cell)
        act = np.flatnonzero(active)
        if act.size == 0:
            msg = "no active candidate for the PCA basis"
            raise InsufficientCandidatesError(msg)
        act_ids = [int(table["id"][r]) for r in act]
        try:
            pca = pca_basis(kernels[[kernel_row[i] for i in act_ids]],
                            subtract_mean=cfg.subtract_mean_for_pca,
                            n_components=cfg.num_principal_components)
        except ValueError as err:
            raise InsufficientCandidatesError(str(err)) from err
        rows = np.array([stamp_row[i] for i in act_ids], dtype=np.int64)
        fits = fit_single_kernels(tuple(a[rows] for a in template),
                                  tuple(a[rows] for a in science), pca.basis, options)
        logger.info("PCA pass %d: %d kernels, %d components (%.4f of the variance), "
                    "%d refits rejected", n_pass, pca.n_kernels, pca.basis.shape[0],
                    pca.explained_fraction, int((~fits.good).sum()))
        if fits.good.all():
            break
        n = len(table["id"])
        bad = np.zeros(n, dtype=bool)
        bad[act[~fits.good]] = True
        reasons = np.full(n, "", dtype=object)
        reasons[act] = [f"PCA refit: {r}" for r in fits.reason]
        table = reject(table, bad, stage="pca", iteration=iteration, reasons=reasons)
        try:
            rejected, passes = clip_kernel_sums(
                table["kernel_sum"], table["cell"], table["rank"], table["status"] == "GOOD",
                n_star_per_cell=cfg.n_star_per_cell, max_ksum_sigma=cfg.max_ksum_sigma,
                clipping=cfg.kernel_sum_clipping)
        except PsfMatchError as err:
            raise InsufficientCandidatesError(str(err)) from err
        if rejected.any():
            table = reject(table, rejected, stage="ksum", iteration=iteration,
                           reasons=kernel_sum_reasons(table["kernel_sum"], passes[-1],
                                                      cfg.max_ksum_sigma))
    description = {
        "type": "pca",
        "n_components": int(pca.basis.shape[0]),
        "subtract_mean": cfg.subtract_mean_for_pca,
        "n_kernels": pca.n_kernels,
        "explained_fraction": pca.explained_fraction,
        "eigenvalues": [float(v) for v in pca.eigenvalues[:10]],
        "fitting_basis": dict(fitting_basis),
    }
    return PcaRefit(table, pca.basis, fits.normal_matrix, fits.normal_vector, act_ids,
                    description)
