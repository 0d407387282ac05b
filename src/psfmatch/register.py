r"""Register two exposures without a WCS: match their stars, fit an affine pixel transform.

Convention
----------
Every position is a 0-based *parent* pixel coordinate, pixel centres at integers:
``x = column + xy0[0]``, ``y = row + xy0[1]`` (as :mod:`psfmatch.detect`). The result
maps a science position :math:`\mathbf{s}` to the template position of the same sky point,

.. math::

    \mathbf{t} = M \mathbf{s} + \mathbf{o},

with :math:`M` a 2×2 matrix and :math:`\mathbf{o}` an offset, both in template pixels
(the direction :func:`psfmatch.warp_transform.warp_exposure_pixels` needs: for each science
pixel, where to sample the template).

Method
------
1. **Sources** (:func:`find_sources`): significant peaks of the Gaussian-smoothed image,
   each centroid refined by adaptive (elliptical-Gaussian-weighted) moments on a
   background-subtracted stamp, with its standard error from the variance plane; sources
   near masked pixels or the edge are dropped.
2. **Asterisms**: from the ``n_asterism_sources`` brightest sources of each image, the
   triangles formed by each source and two of its ``n_neighbours`` nearest neighbours.
   With sides :math:`L_1 \ge L_2 \ge L_3` a triangle's invariants
   :math:`(L_2/L_1,\, L_3/L_2)` do not change under shift, rotation or scale; its vertices
   are ordered as opposite :math:`L_1, L_2, L_3`.
3. **Hypotheses**: triangles whose invariants agree within ``invariant_tolerance`` (and
   whose orientations agree, unless ``allow_reflection``) give a similarity transform
   :math:`t = a s + b` (complex; least squares on the vertices). Each is scored by the
   number of bright science sources it puts within ``match_radius`` of a bright template
   source; the three best distinct ones (at least six votes) are refined in turn.
4. **Refinement**: every science source (up to ``max_sources``) is paired with its
   nearest template source within ``match_radius``; an affine transform is fitted by
   least squares weighted by the pairs' inverse centroid variances; pairs whose residual
   exceeds ``clip_sigma`` robust standard deviations are dropped and the fit repeated;
   the pairing is redone with the new transform until the pairs stop changing.
5. If no hypothesis passes, the asterism lists grow threefold (partial overlap).

A refined transform is accepted when at least ``min_matches`` pairs survive (more in
dense lists, where chance pairs are likely), their weighted 2-D rms residual
:math:`\sqrt{\sum_i w_i |\mathbf{t}_i - M\mathbf{s}_i - \mathbf{o}|^2 / \sum_i w_i}` is at
most ``max_rms`` pixels and its scale :math:`\sqrt{|\det M|}` lies within ``scale_range``;
otherwise :class:`RegistrationError` carries the numbers of the best attempt.

Any rotation is found (triangle invariants do not depend on it), so an image rotated by
90° registers as such. No file I/O happens here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from psfmatch.config.sections import RegistrationOptions
from psfmatch.errors import ConfigError, RegistrationError
from psfmatch.exposure import Exposure
from psfmatch.register_match import (
    clipped_affine_fit,
    fit_affine,
    mutual_pairs,
    similarity_hypotheses,
)
from psfmatch.register_sources import find_sources

__all__ = [
    "AffineTransform",
    "RegistrationError",
    "RegistrationOptions",
    "find_sources",
    "fit_affine",
    "match_sources",
    "register_exposures",
]

log = logging.getLogger("psfmatch.register")

#: A hypothesis must put at least this many bright sources on template sources (the
#: three vertices of its own triangle and three more) to be refined.
_MIN_VOTES = 6

#: Factor by which the asterism lists grow after a failed attempt.
_WIDEN = 3


@dataclass(frozen=True, eq=False)
class AffineTransform:
    r"""Science parent pixel → template parent pixel: :math:`\mathbf t = M\mathbf s + \mathbf o`.

    Attributes
    ----------
    matrix : numpy.ndarray
        :math:`M`, shape ``(2, 2)``, acting on column vectors ``(x, y)``.
    offset : numpy.ndarray
        :math:`\mathbf o`, shape ``(2,)`` (template px).
    n_matches : int
        Number of source pairs the transform was fitted to.
    rms : float
        Weighted 2-D rms residual of those pairs (template px),
        :math:`\sqrt{\sum_i w_i |\mathbf r_i|^2 / \sum_i w_i}` with :math:`w_i` the
        inverse residual variance of pair :math:`i` (equal weights without position
        errors): the scatter of the pairs that drive the fit.
    science_xy, template_xy : numpy.ndarray
        The matched pairs, shape ``(n_matches, 2)``, parent pixels of each image.
    covariance : numpy.ndarray
        ``(3, 3)`` covariance (px², per template axis, the same for both) of the
        coefficients ``(m_x, m_y, o)`` of one output axis, :math:`t = m_x x + m_y y + o`:
        :math:`\chi^2_\nu (D^T W D)^{-1}` with :math:`D` rows ``(x, y, 1)`` of the
        science positions, :math:`W` the pair weights and :math:`\chi^2_\nu \ge 1` the
        reduced chi-square. Zeros when unknown.
    """

    matrix: np.ndarray
    offset: np.ndarray
    n_matches: int = 0
    rms: float = 0.0
    science_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)), repr=False)
    template_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)), repr=False)
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)), repr=False)

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64).reshape(2, 2)
        o = np.array(self.offset, dtype=np.float64).reshape(2)
        m.flags.writeable = False
        o.flags.writeable = False
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "offset", o)
        for name, shape in (("science_xy", (-1, 2)), ("template_xy", (-1, 2)),
                            ("covariance", (3, 3))):
            a = np.array(getattr(self, name), dtype=np.float64).reshape(shape)
            a.flags.writeable = False
            object.__setattr__(self, name, a)

    def position_error(self, x: Any, y: Any) -> np.ndarray:
        r"""Formal 1-sigma error (template px, per axis) of the mapped position of ``(x, y)``.

        :math:`\sqrt{\mathbf d^T C \mathbf d}` with :math:`\mathbf d = (x, y, 1)` and
        :math:`C` = ``covariance``: the statistical uncertainty of the fit, not of the
        affine model.
        """
        x = np.asarray(x, dtype=np.float64)
        d = np.stack([x, np.asarray(y, dtype=np.float64) + 0 * x, np.ones_like(x)], axis=-1)
        return np.sqrt(np.einsum("...i,ij,...j->...", d, self.covariance, d))

    def __call__(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Template parent position(s) of science parent position(s) ``(x, y)``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        (a, b), (c, d) = self.matrix
        return a * x + b * y + self.offset[0], c * x + d * y + self.offset[1]

    @property
    def scale(self) -> float:
        """:math:`\\sqrt{|\\det M|}`: template pixels per science pixel (linear)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix))))

    @property
    def rotation_deg(self) -> float:
        """Rotation angle (deg, counter-clockwise in pixel axes) of the nearest similarity."""
        (a, b), (c, d) = self.matrix
        return float(math.degrees(math.atan2(c - b, a + d)))

    def inverse(self) -> AffineTransform:
        """Template parent pixel → science parent pixel (pairs swapped)."""
        inv = np.linalg.inv(self.matrix)
        return AffineTransform(inv, -inv @ self.offset, self.n_matches, self.rms,
                               self.template_xy, self.science_xy)  # covariance unknown

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without the pairs)."""
        return {"matrix": self.matrix.tolist(), "offset": self.offset.tolist(),
                "n_matches": self.n_matches, "rms_pix": self.rms, "scale": self.scale,
                "rotation_deg": self.rotation_deg}


# --------------------------------------------------------------------------- matching
def _needed_matches(tr: AffineTransform, s_xy: np.ndarray, t_xy: np.ndarray,
                    opt: RegistrationOptions) -> int:
    r"""Matches needed to rule out chance: ``min_matches``, and more in dense fields.

    Under a wrong transform, each of the :math:`n` science sources that land inside the
    template sources' bounding box (area :math:`A`, :math:`n_T` sources) finds a template
    source within :math:`r` = ``match_radius`` with probability
    :math:`n_T \pi r^2 / A`: :math:`\lambda = n n_T \pi r^2 / A` chance pairs, which
    the six fitted parameters can bend towards. Require
    :math:`\lceil\lambda + 5\sqrt\lambda\rceil + 6` as well.
    """
    pred = s_xy @ tr.matrix.T + tr.offset
    lo, hi = t_xy.min(axis=0), t_xy.max(axis=0)
    n_in = int(np.count_nonzero(np.all((pred >= lo) & (pred <= hi), axis=1)))
    area = max(float(np.prod(hi - lo)), 1.0)
    lam = n_in * min(1.0, len(t_xy) * math.pi * opt.match_radius**2 / area)
    return max(opt.min_matches, math.ceil(lam + 5.0 * math.sqrt(lam)) + 6)


def _refine(matrix: np.ndarray, offset: np.ndarray, s_all: np.ndarray, s_err: np.ndarray,
            t_all: np.ndarray, t_err: np.ndarray, t_tree: cKDTree,
            opt: RegistrationOptions) -> tuple[AffineTransform, str, int]:
    """Pair, fit, clip and re-pair from a first transform until the pairs are stable.

    Returns the fitted transform, what disqualifies it (``""`` if nothing) and the number
    of matches it needed (see :func:`_needed_matches`).
    """
    scale2 = abs(float(np.linalg.det(matrix)))
    pairs: tuple[np.ndarray, np.ndarray] | None = None
    keep = np.zeros(0, dtype=bool)
    cov, rms = np.zeros((3, 3)), math.nan
    for _ in range(opt.max_iterations):
        i, j = mutual_pairs(s_all, t_tree, matrix, offset, opt.match_radius)
        if i.size < 3:
            return (AffineTransform(matrix, offset, int(i.size), math.nan),
                    "fewer than 3 sources pair up", opt.min_matches)
        if pairs is not None and np.array_equal(i, pairs[0]) and np.array_equal(j, pairs[1]):
            break
        pairs = (i, j)
        err = np.sqrt(scale2 * s_err[i] ** 2 + t_err[j] ** 2 + opt.centroid_error_floor**2)
        matrix, offset, keep, cov, rms = clipped_affine_fit(s_all[i], t_all[j], err,
                                                            opt.clip_sigma)
    i, j = pairs[0][keep], pairs[1][keep]
    result = AffineTransform(matrix, offset, int(i.size), rms, s_all[i], t_all[j], cov)
    det = float(np.linalg.det(matrix))
    lo, hi = opt.scale_range
    need = _needed_matches(result, s_all, t_all, opt)
    if result.n_matches < need:
        why = "too few matched sources"
        if need > opt.min_matches:
            why += f" (min_matches {opt.min_matches}, raised to {need} against chance pairs)"
        return result, why, need
    if not rms <= opt.max_rms:
        return result, "matched sources scatter too much", need
    if not lo <= result.scale <= hi or (det < 0 and not opt.allow_reflection):
        return result, (f"the fitted transform has scale {result.scale:.4g} and "
                        f"determinant {det:.4g} (scale range {lo:g}..{hi:g}, reflection "
                        f"{'allowed' if opt.allow_reflection else 'not allowed'})"), need
    return result, "", need


# --------------------------------------------------------------------------- public
def match_sources(
    science_xy: np.ndarray,
    template_xy: np.ndarray,
    *,
    science_error: np.ndarray | None = None,
    template_error: np.ndarray | None = None,
    options: RegistrationOptions | None = None,
    label: str = "science/template",
) -> AffineTransform:
    r"""Affine transform from science to template positions by matching two source lists.

    Parameters
    ----------
    science_xy, template_xy : numpy.ndarray
        Source positions ``(n, 2)`` (parent px), **brightest first**; the first
        ``n_asterism_sources`` form triangles and the first ``max_sources`` are paired.
    science_error, template_error : numpy.ndarray, optional
        Per-axis standard errors (px) of the positions. A pair's residual variance is
        :math:`s^2\sigma_S^2 + \sigma_T^2 + \sigma_0^2` (:math:`s` the scale of the
        asterism transform, :math:`\sigma_0` = ``centroid_error_floor``) and the fit is
        weighted by its inverse; equal errors when omitted.
    options : RegistrationOptions, optional
        Defaults to ``RegistrationOptions()``.
    label : str
        Names the pair in error messages.

    Returns
    -------
    AffineTransform
        :math:`\mathbf t = M\mathbf s + \mathbf o` fitted to the clipped mutual-nearest
        pairs, with their number, rms residual and positions.

    Raises
    ------
    RegistrationError
        No triangle pair agrees; fewer than ``min_matches`` pairs; rms above ``max_rms``;
        or a scale outside ``scale_range``.
    """
    opt = options or RegistrationOptions()

    def usable(xy, err):
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        err = np.zeros(len(xy)) if err is None else np.asarray(err, dtype=np.float64)
        if err.shape != (len(xy),):
            raise ConfigError(f"position errors of shape {err.shape} for {len(xy)} sources")
        ok = np.all(np.isfinite(xy), axis=1) & np.isfinite(err) & (err >= 0)
        return xy[ok][: opt.max_sources], err[ok][: opt.max_sources]

    s_all, s_err = usable(science_xy, science_error)
    t_all, t_err = usable(template_xy, template_error)
    numbers = {"min_matches": opt.min_matches, "max_rms": opt.max_rms,
               "n_science": len(s_all), "n_template": len(t_all)}

    def fail(why: str, n: int, rms: float, need: int | None = None) -> RegistrationError:
        if need is not None:
            numbers["min_matches"] = need
        return RegistrationError(f"cannot register {label} by sources: {why}",
                                 n_matches=n, rms=rms, **numbers)

    if min(len(s_all), len(t_all)) < max(3, _MIN_VOTES):
        raise fail("too few sources detected", 0, math.nan)
    t_tree = cKDTree(t_all)

    n_ast = opt.n_asterism_sources
    best: tuple[AffineTransform, str, int] | None = None
    most_votes = 0
    while True:  # widen the asterism lists until a hypothesis refines well (partial overlap)
        hyps = similarity_hypotheses(
            s_all[:n_ast], t_all[:n_ast], n_neighbours=opt.n_neighbours,
            invariant_tolerance=opt.invariant_tolerance, match_radius=opt.match_radius,
            scale_range=opt.scale_range, allow_reflection=opt.allow_reflection)
        for matrix, offset, votes in hyps:
            most_votes = max(most_votes, votes)
            if votes < _MIN_VOTES:
                break
            result, problem, need = _refine(matrix, offset, s_all, s_err, t_all, t_err,
                                            t_tree, opt)
            if not problem:
                log.info("%s registered by %d sources (asterisms of the %d brightest): "
                         "rms %.3f px, scale %.5f, rotation %.4f deg, offset (%.3f, %.3f)",
                         label, result.n_matches, n_ast, result.rms, result.scale,
                         result.rotation_deg, *result.offset)
                return result
            if best is None or result.n_matches > best[0].n_matches:
                best = (result, problem, need)
        if n_ast >= max(len(s_all), len(t_all)):
            break
        n_ast = min(n_ast * _WIDEN, max(len(s_all), len(t_all)))
    if best is not None:
        raise fail(best[1], best[0].n_matches, best[0].rms, best[2])
    hint = "" if opt.allow_reflection else "; if one image is mirrored, set allow_reflection"
    raise fail(f"no asterism of the {n_ast} brightest sources matches (the best transform "
               f"puts {most_votes} of them on template sources, need {_MIN_VOTES}{hint})",
               0, math.nan)


def register_exposures(
    science: Exposure,
    template: Exposure,
    *,
    options: RegistrationOptions | None = None,
    label: str = "science/template",
) -> AffineTransform:
    r"""Science parent pixel → template parent pixel transform from the two images' stars.

    Sources are found on each exposure with :func:`find_sources` (image, mask and
    variance are read, nothing is modified) and matched with :func:`match_sources`.

    Parameters
    ----------
    science, template : Exposure
        The two images; their WCSs are ignored.
    options : RegistrationOptions, optional
        Defaults to ``RegistrationOptions()``.
    label : str
        Names the pair in log and error messages (e.g. the pair id).

    Returns
    -------
    AffineTransform
        See :func:`match_sources`.

    Raises
    ------
    RegistrationError
        As :func:`match_sources`.
    """
    opt = options or RegistrationOptions()
    kw = {"threshold": opt.detection_threshold, "max_sources": opt.max_sources,
          "smoothing_sigma": opt.smoothing_sigma, "stamp_half_width": opt.stamp_half_width,
          "bad_mask_planes": opt.bad_mask_planes}
    s = find_sources(science, **kw)
    t = find_sources(template, **kw)
    log.info("%s: %d science, %d template sources", label, s["x"].size, t["x"].size)
    return match_sources(np.column_stack([s["x"], s["y"]]), np.column_stack([t["x"], t["y"]]),
                         science_error=s["error"], template_error=t["error"], options=opt,
                         label=label)
