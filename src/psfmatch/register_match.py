"""Pieces of registration by sources: affine fits, triangle asterisms, pairing.

Used by :mod:`psfmatch.register` (see its docstring for the method); positions are
``(n, 2)`` arrays of parent pixels, transforms ``t = matrix @ s + offset``.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "clipped_affine_fit",
    "fit_affine",
    "mutual_pairs",
    "residuals",
    "similarity_hypotheses",
    "triangles",
]

_ROBUST_RAYLEIGH = math.sqrt(2.0 * math.log(2.0))  # median |r| / sigma for a 2-D Gaussian

#: Most triangle pairs scored (the closest in invariants).
_MAX_HYPOTHESES = 5000

#: Most top-scoring hypotheses examined for distinct ones.
_MAX_EXAMINED = 1000


def fit_affine(
    science_xy: np.ndarray, template_xy: np.ndarray, weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Weighted least-squares affine transform :math:`\mathbf t \approx M \mathbf s + \mathbf o`.

    Minimises :math:`\sum_i w_i |\mathbf t_i - M \mathbf s_i - \mathbf o|^2`.

    Parameters
    ----------
    science_xy, template_xy : numpy.ndarray
        Matched positions, shape ``(n, 2)``, ``n >= 3`` and not collinear.
    weights : numpy.ndarray, optional
        ``(n,)`` non-negative weights, typically the inverse variance of a pair's
        residual per axis (px⁻²); equal weights when omitted.

    Returns
    -------
    matrix : numpy.ndarray
        ``(2, 2)``.
    offset : numpy.ndarray
        ``(2,)``.
    """
    s = np.asarray(science_xy, dtype=np.float64)
    t = np.asarray(template_xy, dtype=np.float64)
    root_w = np.ones(len(s)) if weights is None else np.sqrt(np.asarray(weights, float))
    centre = s.mean(axis=0)  # centring keeps the normal equations well conditioned
    design = np.column_stack([s - centre, np.ones(len(s))]) * root_w[:, None]
    coef, *_ = np.linalg.lstsq(design, t * root_w[:, None], rcond=None)
    matrix = coef[:2].T
    return matrix, coef[2] - matrix @ centre


def residuals(matrix: np.ndarray, offset: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    r"""Lengths :math:`|\mathbf t_i - M \mathbf s_i - \mathbf o|` (template px)."""
    return np.hypot(*(t - s @ matrix.T - offset).T)


def clipped_affine_fit(
    s: np.ndarray, t: np.ndarray, err: np.ndarray, clip_sigma: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    r"""Weighted affine fit with iterative clipping of normalised residuals.

    ``err`` is each pair's per-axis residual standard deviation (px); the weights are
    :math:`w_i = 1/\mathrm{err}_i^2`. A pair is dropped when
    :math:`\chi_i = |\mathbf r_i| / \mathrm{err}_i` exceeds ``clip_sigma`` times the
    robust scale of :math:`\chi` among the kept pairs (median / :math:`\sqrt{2\ln 2}`, the
    median of a unit 2-D Gaussian's radius), so under-estimated errors do not clip good
    pairs; fit and clip alternate until the kept set is stable.

    Returns
    -------
    matrix, offset : numpy.ndarray
        The fitted transform.
    keep : numpy.ndarray
        Boolean, the pairs kept.
    covariance : numpy.ndarray
        ``(3, 3)``: :math:`\max(1, \chi^2_\nu)\,(D^T W D)^{-1}`, :math:`D` rows
        ``(x, y, 1)`` of the kept science positions, :math:`\chi^2_\nu = \sum w_i
        |\mathbf r_i|^2 / (2n - 6)`: the covariance of either output axis's three
        coefficients.
    rms : float
        Weighted rms residual :math:`\sqrt{\sum w_i |\mathbf r_i|^2 / \sum w_i}` (px).
    """
    keep = np.ones(len(s), dtype=bool)
    weights = 1.0 / err**2
    matrix, offset = fit_affine(s, t, weights)
    for _ in range(20):
        chi = residuals(matrix, offset, s, t) / err
        scale = float(np.median(chi[keep])) / _ROBUST_RAYLEIGH
        new = chi <= clip_sigma * max(scale, 1e-6)
        if new.sum() < 3 or np.array_equal(new, keep):
            break
        keep = new
        matrix, offset = fit_affine(s[keep], t[keep], weights[keep])
    w = weights[keep]
    design = np.column_stack([s[keep], np.ones(int(keep.sum()))])
    chi2 = float(np.sum(w * residuals(matrix, offset, s[keep], t[keep]) ** 2))
    dof = max(1, 2 * design.shape[0] - 6)
    cov = np.linalg.pinv(design.T @ (design * w[:, None])) * max(1.0, chi2 / dof)
    rms = math.sqrt(chi2 / float(np.sum(w)))
    return matrix, offset, keep, cov, rms


# --------------------------------------------------------------------------- asterisms
def triangles(xy: np.ndarray, n_neighbours: int, tolerance: float):
    """Triangles of each point and pairs of its nearest neighbours.

    Returns ``(vertices, invariants, orientation)``: vertex indices ``(m, 3)`` ordered as
    opposite the longest, middle and shortest side; invariants ``(L2/L1, L3/L2)``; the
    sign of the ordered triangle's signed area. Near-isosceles triangles, whose vertex order
    is ambiguous at ``tolerance``, are left out.
    """
    n = len(xy)
    k = min(n_neighbours, n - 1)
    if k < 2:
        return np.zeros((0, 3), int), np.zeros((0, 2)), np.zeros(0)
    _, nn = cKDTree(xy).query(xy, k + 1)
    pairs = np.array(list(combinations(range(1, k + 1), 2)))
    tri = np.concatenate([np.stack([nn[:, 0], nn[:, a], nn[:, b]], axis=1) for a, b in pairs])
    tri = np.unique(np.sort(tri, axis=1), axis=0)
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2])]
    p = xy[tri]  # (m, 3, 2)
    side = np.stack([np.hypot(*(p[:, 1] - p[:, 2]).T), np.hypot(*(p[:, 0] - p[:, 2]).T),
                     np.hypot(*(p[:, 0] - p[:, 1]).T)], axis=1)  # side opposite vertex i
    order = np.argsort(-side, axis=1)
    side = np.take_along_axis(side, order, axis=1)
    tri = np.take_along_axis(tri, order, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.column_stack([side[:, 1] / side[:, 0], side[:, 2] / side[:, 1]])
    good = (np.all(np.isfinite(inv), axis=1) & (side[:, 2] > 0)
            & (side[:, 0] < side[:, 1] + side[:, 2])  # not collinear
            & (1.0 - inv[:, 0] > 2 * tolerance) & (1.0 - inv[:, 1] > 2 * tolerance))
    tri, inv = tri[good], inv[good]
    p = xy[tri]
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    orient = np.sign(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])
    return tri, inv, orient


def similarity_hypotheses(
    s_xy: np.ndarray,
    t_xy: np.ndarray,
    *,
    n_neighbours: int,
    invariant_tolerance: float,
    match_radius: float,
    scale_range: tuple[float, float],
    allow_reflection: bool,
    max_count: int = 3,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    r"""Similarity transforms that best map science triangles onto template triangles.

    Triangle pairs whose invariants differ by at most ``invariant_tolerance`` (and whose
    orientations agree unless ``allow_reflection``) each give the least-squares similarity
    :math:`t = a s + b` (complex :math:`a, b`; :math:`t = a \bar s + b` for a mirrored
    pair) of their vertices; those with :math:`|a|` in ``scale_range`` (the
    ``_MAX_HYPOTHESES`` closest in invariants) are scored by their *votes*, the number of
    points of ``s_xy`` they put within ``match_radius`` of a point of ``t_xy`` (ties: the
    smaller summed distance).

    Returns
    -------
    list of tuple
        Up to ``max_count`` distinct hypotheses ``(matrix, offset, votes)``
        (``t = matrix @ s + offset``), most votes first; two are distinct when they map
        some corner of the science points' bounding box more than ``match_radius`` apart.
        Empty when no triangle pair agrees.
    """
    ts, inv_s, or_s = triangles(s_xy, n_neighbours, invariant_tolerance)
    tt, inv_t, or_t = triangles(t_xy, n_neighbours, invariant_tolerance)
    if len(ts) == 0 or len(tt) == 0:
        return []
    hits = cKDTree(inv_t).query_ball_point(inv_s, invariant_tolerance)
    i_s = np.repeat(np.arange(len(ts)), [len(h) for h in hits])
    i_t = np.fromiter((j for h in hits for j in h), dtype=np.intp, count=i_s.size)
    if not allow_reflection:
        same = or_s[i_s] == or_t[i_t]
        i_s, i_t = i_s[same], i_t[same]
    if i_s.size > _MAX_HYPOTHESES:
        closest = np.argsort(np.hypot(*(inv_s[i_s] - inv_t[i_t]).T), kind="stable")
        i_s, i_t = i_s[closest[:_MAX_HYPOTHESES]], i_t[closest[:_MAX_HYPOTHESES]]
    zs = s_xy[ts[i_s]] @ np.array([1.0, 1j])  # (h, 3) complex vertices
    zt = t_xy[tt[i_t]] @ np.array([1.0, 1j])
    mirrored = or_s[i_s] != or_t[i_t]
    zs = np.where(mirrored[:, None], np.conj(zs), zs)
    ds = zs - zs.mean(axis=1, keepdims=True)
    dt = zt - zt.mean(axis=1, keepdims=True)
    a = (dt * np.conj(ds)).sum(axis=1) / (np.abs(ds) ** 2).sum(axis=1)
    b = zt.mean(axis=1) - a * zs.mean(axis=1)
    lo, hi = scale_range
    ok = (np.abs(a) >= lo) & (np.abs(a) <= hi)
    a, b, mirrored = a[ok], b[ok], mirrored[ok]
    if a.size == 0:
        return []
    z = s_xy @ np.array([1.0, 1j])
    zz = np.where(mirrored[:, None], np.conj(z)[None, :], z[None, :])
    pred = a[:, None] * zz + b[:, None]
    dist, _ = cKDTree(t_xy).query(np.column_stack([pred.real.ravel(), pred.imag.ravel()]),
                                  distance_upper_bound=match_radius)
    dist = dist.reshape(pred.shape)
    votes = np.isfinite(dist).sum(axis=1)
    spread = np.where(np.isfinite(dist), dist, 0.0).sum(axis=1)
    box = np.array([z.real.min(), z.real.max()])[[0, 1, 0, 1]] + 1j * np.array(
        [z.imag.min(), z.imag.max()])[[0, 0, 1, 1]]
    chosen: list[int] = []
    corners: list[np.ndarray] = []
    for k in np.lexsort((spread, -votes))[:_MAX_EXAMINED]:
        c = a[k] * (np.conj(box) if mirrored[k] else box) + b[k]
        if all(np.max(np.abs(c - other)) > match_radius for other in corners):
            chosen.append(int(k))
            corners.append(c)
            if len(chosen) == max_count:
                break
    out = []
    for k in chosen:
        ar, ai = a[k].real, a[k].imag
        matrix = np.array([[ar, -ai], [ai, ar]])
        if mirrored[k]:  # t = a conj(s) + b: conj flips y
            matrix = matrix @ np.diag([1.0, -1.0])
        out.append((matrix, np.array([b[k].real, b[k].imag]), int(votes[k])))
    return out


def mutual_pairs(s_xy: np.ndarray, t_tree: cKDTree, matrix: np.ndarray, offset: np.ndarray,
                 radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs: science index ``i`` and template index ``j`` arrays.

    Each transformed science position is paired with its nearest template source within
    ``radius``; a template source claimed by several keeps only the closest.
    """
    pred = s_xy @ matrix.T + offset
    dist, j = t_tree.query(pred, distance_upper_bound=radius)
    i = np.flatnonzero(np.isfinite(dist))
    j, dist = j[i], dist[i]
    order = np.lexsort((dist, j))  # per template source keep the closest science source
    first = np.ones(order.size, dtype=bool)
    first[1:] = j[order][1:] != j[order][:-1]
    keep = order[first]
    return i[keep], j[keep]
