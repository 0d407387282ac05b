"""Seeded simulator of template/science pairs with a known spatially varying kernel.

Model (science-pixel *parent* coordinates throughout, pixel centres at integers):

.. math::

    S = K_{x,y} \\star T_0 + b(x, y) + \\sum_{\\rm transients} F_i P^S_i
        + \\sum_{\\rm variables} (F^S_i - s F^T_i) P^S_i + n_S,
    \\qquad T = T_0 + n_T,

where :math:`T_0` is the noiseless template scene (pixel-integrated Gaussian stars of
width :math:`\\sigma_T` and PSF-convolved elliptical Gaussian galaxies), :math:`\\star` is
:func:`psfmatch.convolution.correlate_spatial` (afw convention: correlation, kernel
evaluated at the output pixel), :math:`b = b_0 + b_x u + b_y v` with normalised
coordinates :math:`u, v \\in [-1, 1]` over the science frame, and the truth kernel is
exactly

.. math::

    K_{x,y} = \\sum_{j=1}^{2} w_j(x, y)\\, B_j, \\quad
    B_j = s\\, \\frac{G(\\sigma_j, \\delta)}{\\sum G(\\sigma_j, \\delta)}, \\quad
    w_{1,2} = \\tfrac12 (1 \\mp m), \\quad m = a u + c v,\\; |a| + |c| = 1,

with point-sampled Gaussians :math:`G` centred on ``kernel_shift`` :math:`\\delta`,
:math:`\\sigma_{1,2}^2 = \\sigma_K^2 (1 \\mp d)`, :math:`\\sigma_K^2 = \\sigma_S^2 -
\\sigma_T^2`, so the kernel's second moment is :math:`\\sigma_K^2 (1 + d m)` and its sum is
:math:`s` everywhere. ``d`` is chosen so that :math:`(\\sigma_{\\max} - \\sigma_{\\min}) /
\\sigma_K` equals ``kernel_width_gradient``. Noise: Poisson in electrons on signal + sky,
plus Gaussian read noise, in ADU, sky then subtracted; the variance plane is the expected
variance :math:`(I + {\\rm sky}) / g + (r / g)^2`. Because of the correlation convention a
kernel centred on :math:`\\delta` moves stars by :math:`-\\delta` in the science image.

No file I/O here: :meth:`Truth.to_dict` gives JSON-able scalars, :meth:`Truth.catalogues`
plain dicts of numpy arrays. Each WCS maps 0-based *array* pixel indices (parent − xy0),
as a FITS header does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from astropy.wcs import WCS
from scipy.special import erf

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.convolution import correlate_spatial
from psfmatch.errors import ConfigError
from psfmatch.exposure import DEFAULT_MASK_PLANES, Exposure

__all__ = [
    "SimulatedPair", "SimulatedPsf", "SimulationParams", "Truth", "TruthKernel",
    "gaussian_psf_image", "make_pair", "render_gaussians", "science_psf_fwhm_at",
    "source_table",
]

BAD_COLUMN_VALUE = 1.0e5  #: garbage value written into the bad column (ADU)
_STAMP_NSIGMA = 6.0


def _fail(name: str, value: Any, what: str) -> None:
    raise ConfigError(f"SimulationParams.{name} must be {what}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class SimulationParams:
    """Every knob of :func:`make_pair` (validated on construction).

    Parameters
    ----------
    shape : (int, int)
        Science (and template) array shape ``(ny, nx)``.
    seed : int
        Root of the ``SeedSequence`` all random streams derive from.
    template_fwhm, science_fwhm : float
        Gaussian PSF FWHM (px) of the template and, at the image centre, the science.
    kernel_width_gradient : float
        ``(sigma_max - sigma_min) / sigma_centre`` of the matching kernel's width between
        the two extreme corners along ``kernel_gradient_angle``; in ``[0, 1)``.
    kernel_gradient_angle : float
        Direction (deg from +x) of the kernel-width gradient; 0 < angle < 90 mixes x and y.
    kernel_shift : (float, float)
        Kernel centroid offset ``(dx, dy)`` in px (stars move by minus this).
    photometric_scale : float
        Kernel sum: science flux / template flux.
    background : (float, float, float)
        ``(b0, bx, by)``: differential background ``b0 + bx u + by v`` (ADU) added to the
        science image only; ``u, v`` run from -1 to 1 across the science frame.
    sky_template, sky_science : float
        Sky level (ADU) used for the noise and then subtracted.
    gain : float
        e-/ADU, both images.
    read_noise : float
        Read noise (e-), both images.
    add_noise : bool
        If False, images are the noiseless model (variance plane unchanged).
    star_density : float
        Stars per 1e6 px; flux (template ADU) drawn from dN/dF ∝ F**flux_power_index on
        ``[flux_min, flux_max]``.
    flux_power_index : float
        Power-law index of the flux distribution (< -1).
    flux_min, flux_max : float
        Template flux limits (ADU) of stars and galaxies.
    galaxy_density : float
        Galaxies per 1e6 px (elliptical Gaussians).
    galaxy_sigma_range : (float, float)
        Range of the intrinsic major-axis sigma (px); axis ratio uniform in [0.3, 1].
    saturation : float
        Level (ADU, on sky + signal) above which a pixel is clipped and flagged SAT.
    bad_column : int or None
        Array column set to garbage and flagged BAD in both images.
    n_cosmic_rays : int
        Cosmic-ray hits (1-3 px each) per image, flagged CR.
    cosmic_ray_flux_range : (float, float)
        Range of the per-pixel cosmic-ray deposit (ADU).
    n_transients : int
        Point sources present in the science image only.
    n_variables : int
        Point sources whose flux differs between the images.
    transient_flux_range : (float, float)
        Log-uniform range (science ADU) of transient fluxes and variable template fluxes.
    kernel_size : int
        Odd side of the truth kernel image.
    template_offset : (float, float, float)
        ``(dx, dy, rotation_deg)`` of the template grid w.r.t. the science grid: template
        pixel = ``c + R(rot) (science pixel - c) + (dx, dy)``, ``c`` the image centre.
    pixel_scale : float
        arcsec / px of the TAN WCS.
    sky_centre : (float, float)
        (RA, Dec) in degrees of the tangent point (science image centre).
    xy0 : (int, int)
        Parent coordinate of array element ``[0, 0]`` of both images.
    """

    shape: tuple[int, int] = (1024, 1024)
    seed: int = 42
    template_fwhm: float = 3.0
    science_fwhm: float = 4.5
    kernel_width_gradient: float = 0.15
    kernel_gradient_angle: float = 30.0
    kernel_shift: tuple[float, float] = (0.0, 0.0)
    photometric_scale: float = 1.1
    background: tuple[float, float, float] = (5.0, 2.0, -1.5)
    sky_template: float = 100.0
    sky_science: float = 200.0
    gain: float = 1.0
    read_noise: float = 4.0
    add_noise: bool = True
    star_density: float = 1500.0
    flux_power_index: float = -2.5
    flux_min: float = 300.0
    flux_max: float = 1.0e6
    galaxy_density: float = 200.0
    galaxy_sigma_range: tuple[float, float] = (2.0, 6.0)
    saturation: float = 60000.0
    bad_column: int | None = 100
    n_cosmic_rays: int = 20
    cosmic_ray_flux_range: tuple[float, float] = (1000.0, 10000.0)
    n_transients: int = 10
    n_variables: int = 10
    transient_flux_range: tuple[float, float] = (2000.0, 20000.0)
    kernel_size: int = 31
    template_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pixel_scale: float = 0.2
    sky_centre: tuple[float, float] = (150.0, 2.0)
    xy0: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:  # noqa: C901 - a flat list of checks
        tuples = {"shape": 2, "kernel_shift": 2, "background": 3, "galaxy_sigma_range": 2,
                  "cosmic_ray_flux_range": 2, "transient_flux_range": 2,
                  "template_offset": 3, "sky_centre": 2, "xy0": 2}
        for name, n in tuples.items():
            value = getattr(self, name)
            try:
                vals = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                _fail(name, value, f"a sequence of {n} numbers")
            if len(vals) != n or not all(math.isfinite(v) for v in vals):
                _fail(name, value, f"a sequence of {n} finite numbers")
            if name in ("shape", "xy0"):
                if any(v != int(v) for v in vals):
                    _fail(name, value, "integers")
                vals = tuple(int(v) for v in vals)
            object.__setattr__(self, name, vals)
        for name in ("seed", "n_cosmic_rays", "n_transients", "n_variables", "kernel_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                _fail(name, value, "a non-negative integer")
        positive = ("template_fwhm", "science_fwhm", "photometric_scale", "gain",
                    "flux_min", "flux_max", "saturation", "pixel_scale")
        non_negative = ("sky_template", "sky_science", "read_noise", "star_density",
                        "galaxy_density", "kernel_width_gradient")
        for name in positive + non_negative + ("kernel_gradient_angle", "flux_power_index"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating) \
                    or not math.isfinite(value):
                _fail(name, value, "a finite number")
            if name in positive and value <= 0:
                _fail(name, value, "> 0")
            if name in non_negative and value < 0:
                _fail(name, value, ">= 0")
        ny, nx = self.shape
        if self.kernel_size % 2 == 0 or self.kernel_size < 3:
            _fail("kernel_size", self.kernel_size, "odd and >= 3")
        if min(ny, nx) < 2 * self.kernel_size:
            _fail("shape", self.shape, f"at least 2 * kernel_size = {2 * self.kernel_size} px")
        if self.science_fwhm <= self.template_fwhm:
            _fail("science_fwhm", self.science_fwhm,
                  f"> template_fwhm = {self.template_fwhm} (the kernel convolves the template)")
        if self.kernel_width_gradient >= 1.0:
            _fail("kernel_width_gradient", self.kernel_width_gradient, "< 1")
        sig_max = 5.0 * kernel_sigmas(self)[1] + max(map(abs, self.kernel_shift))
        if sig_max > self.kernel_size // 2:
            _fail("kernel_size", self.kernel_size,
                  f"large enough for the kernel (need half-width >= {sig_max:.1f} px)")
        if self.flux_power_index >= -1.0:
            _fail("flux_power_index", self.flux_power_index, "< -1")
        if self.flux_max <= self.flux_min:
            _fail("flux_max", self.flux_max, f"> flux_min = {self.flux_min}")
        for name in ("galaxy_sigma_range", "cosmic_ray_flux_range", "transient_flux_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                _fail(name, getattr(self, name), "(low, high) with 0 < low <= high")
        if self.saturation <= max(self.sky_template, self.sky_science):
            _fail("saturation", self.saturation, "above both sky levels")
        col = self.bad_column
        if col is not None and (isinstance(col, bool) or not isinstance(col, int | np.integer)
                                or not 0 <= col < nx):
            _fail("bad_column", self.bad_column, f"None or an integer column in [0, {nx})")
        if abs(self.template_offset[2]) > 10.0:
            _fail("template_offset", self.template_offset, "a rotation within +-10 deg")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationParams:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SimulationParams fields {unknown}")
        return cls(**data)


def kernel_sigmas(params: SimulationParams) -> tuple[float, float]:
    """Widths ``(sigma_1, sigma_2)`` of the two kernel basis Gaussians (px)."""
    sig_k2 = (params.science_fwhm**2 - params.template_fwhm**2) / SIGMA_TO_FWHM**2
    g = params.kernel_width_gradient
    d = math.sqrt(max(0.0, 1.0 - (1.0 - 0.5 * g * g) ** 2))
    return (math.sqrt(sig_k2 * (1.0 - d)), math.sqrt(sig_k2 * (1.0 + d)))


@dataclass(frozen=True, kw_only=True)
class TruthKernel:
    """:math:`K_{x,y} = \\sum_j w_j(x, y) B_j` (see the module docstring), parent coords."""

    kernel_size: int
    sigmas: tuple[float, ...]
    scale: float
    shift: tuple[float, float]
    centre: tuple[float, float]
    half_extent: tuple[float, float]
    direction: tuple[float, float]
    basis: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = self.kernel_size // 2
        off = np.arange(self.kernel_size, dtype=np.float64) - c
        basis = []
        for sig in self.sigmas:
            gx = np.exp(-0.5 * ((off - self.shift[0]) / sig) ** 2)
            gy = np.exp(-0.5 * ((off - self.shift[1]) / sig) ** 2)
            b = np.outer(gy, gx)
            basis.append(self.scale * b / b.sum())
        object.__setattr__(self, "basis", tuple(basis))

    @classmethod
    def from_params(cls, params: SimulationParams) -> TruthKernel:
        """The truth kernel of a simulation."""
        ny, nx = params.shape
        x0, y0 = params.xy0
        phi = math.radians(params.kernel_gradient_angle)
        a, c = math.cos(phi), math.sin(phi)
        norm = abs(a) + abs(c)
        return cls(kernel_size=params.kernel_size, sigmas=kernel_sigmas(params),
                   scale=float(params.photometric_scale), shift=params.kernel_shift,
                   centre=(x0 + (nx - 1) / 2.0, y0 + (ny - 1) / 2.0),
                   half_extent=((nx - 1) / 2.0, (ny - 1) / 2.0), direction=(a / norm, c / norm))

    def mix_at(self, x: Any, y: Any) -> np.ndarray:
        """Mixing coordinate :math:`m = a u + c v` (in [-1, 1] over the science frame)."""
        u = (np.asarray(x, dtype=np.float64) - self.centre[0]) / self.half_extent[0]
        v = (np.asarray(y, dtype=np.float64) - self.centre[1]) / self.half_extent[1]
        return self.direction[0] * u + self.direction[1] * v

    def weights_at(self, x: Any, y: Any) -> np.ndarray:
        """Weights :math:`w_j(x, y)`, shape ``(n_basis, *broadcast(x, y).shape)``."""
        m = self.mix_at(x, y)
        return np.stack([0.5 * (1.0 - m), 0.5 * (1.0 + m)])

    def kernel_at(self, x: float, y: float) -> np.ndarray:
        """Kernel image ``(kernel_size, kernel_size)`` at parent position ``(x, y)``."""
        w = self.weights_at(x, y)
        return sum(float(wj) * b for wj, b in zip(w, self.basis, strict=True))

    def sum_at(self, x: Any, y: Any) -> np.ndarray:
        """Kernel sum at ``(x, y)`` (equals ``scale`` everywhere)."""
        w = self.weights_at(x, y)
        return sum(wj * b.sum() for wj, b in zip(w, self.basis, strict=True))

    def weight_images(self, shape: tuple[int, int], xy0: tuple[int, int]) -> list[np.ndarray]:
        """:math:`w_j` at every pixel of an image of ``shape`` whose ``[0, 0]`` is ``xy0``."""
        y = np.arange(shape[0], dtype=np.float64)[:, None] + xy0[1]
        x = np.arange(shape[1], dtype=np.float64)[None, :] + xy0[0]
        return list(self.weights_at(x, y))

    def apply(self, image: np.ndarray, *, xy0: tuple[int, int] = (0, 0)) -> np.ndarray:
        """``correlate_spatial(image, basis, weights)`` for an image at parent ``xy0``."""
        return correlate_spatial(image, self.basis, self.weight_images(np.shape(image), xy0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able analytic description (rebuilds the kernel exactly)."""
        return {"model": "linear_gaussian_mixture", "kernel_size": int(self.kernel_size),
                "sigmas": [float(s) for s in self.sigmas], "scale": float(self.scale),
                "shift": [float(s) for s in self.shift],
                "centre": [float(s) for s in self.centre],
                "half_extent": [float(s) for s in self.half_extent],
                "direction": [float(s) for s in self.direction]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TruthKernel:
        """Inverse of :meth:`to_dict`."""
        kw = {k: v for k, v in data.items() if k != "model"}
        return cls(kernel_size=int(kw["kernel_size"]), sigmas=tuple(kw["sigmas"]),
                   scale=float(kw["scale"]), shift=tuple(kw["shift"]),
                   centre=tuple(kw["centre"]), half_extent=tuple(kw["half_extent"]),
                   direction=tuple(kw["direction"]))


def science_psf_fwhm_at(params: SimulationParams, x: Any, y: Any) -> np.ndarray:
    """Second-moment FWHM :math:`2.355 \\sqrt{\\sigma_T^2 + \\sigma_K^2(1 + d m)}` (px)."""
    kernel = TruthKernel.from_params(params)
    sig_t = params.template_fwhm / SIGMA_TO_FWHM
    w = kernel.weights_at(x, y)
    var = sum(wj * s**2 for wj, s in zip(w, kernel.sigmas, strict=True))
    return SIGMA_TO_FWHM * np.sqrt(sig_t**2 + var)


def render_gaussians(image: np.ndarray, x: Any, y: Any, flux: Any, sigma: Any, *,
                     xy0: tuple[int, int] = (0, 0), chunk: int = 4_000_000) -> np.ndarray:
    """Add pixel-integrated circular Gaussians to ``image`` in place (and return it).

    Each source contributes ``flux * Px(col) * Py(row)`` with
    ``Px(i) = [erf((i + 1/2 - x) / (sqrt(2) sigma)) - erf((i - 1/2 - x) / (sqrt(2) sigma))] / 2``
    on a stamp of ±6 sigma; ``x, y`` are parent coordinates.
    """
    x, y, flux, sigma = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, dtype=np.float64))
                                              for a in (x, y, flux, sigma)))
    if x.size == 0:
        return image
    ny, nx = image.shape
    col, row = x - xy0[0], y - xy0[1]
    half = int(math.ceil(_STAMP_NSIGMA * sigma.max()))
    keep = (col > -half - 1) & (col < nx + half) & (row > -half - 1) & (row < ny + half)
    col, row, flux, sigma = col[keep], row[keep], flux[keep], sigma[keep]
    offs = np.arange(-half, half + 1)
    step = max(1, chunk // offs.size**2)
    for s in range(0, col.size, step):
        sl = slice(s, s + step)
        profiles = []
        for c in (col[sl], row[sl]):
            idx = np.rint(c).astype(np.int64)[:, None] + offs
            z = 1.0 / (math.sqrt(2.0) * sigma[sl, None])
            profiles.append((idx, 0.5 * (erf((idx + 0.5 - c[:, None]) * z)
                                         - erf((idx - 0.5 - c[:, None]) * z))))
        (ix, px), (iy, py) = profiles
        stamps = flux[sl, None, None] * py[:, :, None] * px[:, None, :]
        ii = np.broadcast_to(ix[:, None, :], stamps.shape)
        jj = np.broadcast_to(iy[:, :, None], stamps.shape)
        ok = (ii >= 0) & (ii < nx) & (jj >= 0) & (jj < ny)
        image += np.bincount(jj[ok] * nx + ii[ok], weights=stamps[ok],
                             minlength=nx * ny).reshape(ny, nx)
    return image


def _render_ellipses(image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                     cov: np.ndarray, xy0: tuple[int, int]) -> None:
    """Add point-sampled elliptical Gaussians with covariances ``cov + I/12`` (pixel box)."""
    ny, nx = image.shape
    cov = cov + np.eye(2) / 12.0
    for k in range(x.size):
        c = cov[k]
        half = int(math.ceil(_STAMP_NSIGMA * math.sqrt(np.linalg.eigvalsh(c).max())))
        ic, jc = round(x[k] - xy0[0]), round(y[k] - xy0[1])
        ii, jj = np.meshgrid(np.arange(ic - half, ic + half + 1),
                             np.arange(jc - half, jc + half + 1))
        ok = (ii >= 0) & (ii < nx) & (jj >= 0) & (jj < ny)
        if not ok.any():
            continue
        dx, dy = ii[ok] + xy0[0] - x[k], jj[ok] + xy0[1] - y[k]
        inv = np.linalg.inv(c)
        q = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
        val = flux[k] * np.exp(-0.5 * q) / (2 * math.pi * math.sqrt(np.linalg.det(c)))
        image[jj[ok], ii[ok]] += val


def gaussian_psf_image(fwhm: float, size: int, *, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Unit-sum, pixel-integrated Gaussian of ``fwhm`` on an odd ``size`` stamp."""
    if size % 2 == 0 or size < 1:
        raise ValueError(f"size must be a positive odd integer, got {size!r}")
    img = np.zeros((size, size))
    c = size // 2
    render_gaussians(img, c + dx, c + dy, 1.0, fwhm / SIGMA_TO_FWHM)
    return img / img.sum()


@dataclass(frozen=True)
class SimulatedPsf:
    """PSF model: template Gaussian or (``kernel`` given) its mixture with the kernel."""

    sigma_template: float
    kernel: TruthKernel | None = None
    size: int = 31

    def _components(self, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
        if self.kernel is None:
            return np.array([1.0]), np.array([self.sigma_template])
        w = self.kernel.weights_at(x, y)
        return w, np.sqrt(self.sigma_template**2 + np.asarray(self.kernel.sigmas) ** 2)

    @property
    def fwhm(self) -> float:
        """Second-moment FWHM at the image centre (px)."""
        c = self.kernel.centre if self.kernel else (0.0, 0.0)
        w, s = self._components(*c)
        return float(SIGMA_TO_FWHM * np.sqrt(np.sum(w * s**2)))

    def image_at(self, x: float, y: float) -> np.ndarray:
        """Unit-sum ``size x size`` image centred on the stamp centre."""
        img = np.zeros((self.size, self.size))
        w, s = self._components(x, y)
        c = self.size // 2
        render_gaussians(img, c, c, w, s)
        return img / img.sum()


@dataclass(frozen=True, kw_only=True)
class Truth:
    """What the simulation put in (see :func:`make_pair`).

    Catalogues (plain dicts of numpy arrays, science parent pixels unless named otherwise):
    ``stars``/``galaxies``: x, y (scene position on the science grid; the science image
    centroid is at ``(x, y) - kernel_shift``), x_template, y_template, flux_template,
    flux_science (``= scale * flux_template``), in_frame, saturated (stars only);
    ``transients``: x, y (science centroid), flux_science; ``variables``: x, y,
    x_template, y_template, flux_template, flux_science, flux_difference
    (``= flux_science - scale * flux_template``); ``cosmic_rays_template`` /
    ``cosmic_rays_science``: one row per hit pixel, hit (index), x, y, flux.
    """

    params: SimulationParams
    kernel: TruthKernel
    photometric_scale: float
    background: tuple[float, float, float]
    bad_column: int | None
    catalogues: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def background_at(self, x: Any, y: Any) -> np.ndarray:
        """Differential background :math:`b_0 + b_x u + b_y v` (ADU) at parent ``(x, y)``."""
        k = self.kernel
        u = (np.asarray(x, dtype=np.float64) - k.centre[0]) / k.half_extent[0]
        v = (np.asarray(y, dtype=np.float64) - k.centre[1]) / k.half_extent[1]
        b0, bx, by = self.background
        return b0 + bx * u + by * v

    def to_dict(self) -> dict[str, Any]:
        """JSON-able scalar/analytic part (catalogues excluded)."""
        return {"params": self.params.to_dict(), "kernel": self.kernel.to_dict(),
                "photometric_scale": float(self.photometric_scale),
                "background": [float(b) for b in self.background],
                "bad_column": None if self.bad_column is None else int(self.bad_column)}

    @classmethod
    def from_dict(cls, data: dict[str, Any],
                  catalogues: dict[str, dict[str, np.ndarray]] | None = None) -> Truth:
        """Inverse of :meth:`to_dict` (catalogues passed separately)."""
        return cls(params=SimulationParams.from_dict(data["params"]),
                   kernel=TruthKernel.from_dict(data["kernel"]),
                   photometric_scale=float(data["photometric_scale"]),
                   background=tuple(data["background"]), bad_column=data["bad_column"],
                   catalogues=dict(catalogues or {}))


def source_table(truth: Truth) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every simulated source as one flat table ``(columns, units)``.

    Columns: ``kind`` (star, galaxy, transient, variable), ``x``, ``y`` (science parent
    px; scene position, see :class:`Truth`), ``x_template``, ``y_template`` (NaN for
    transients), ``flux_template``, ``flux_science``, ``flux_difference``
    (``flux_science - scale * flux_template``), ``in_frame``.
    """
    cats, scale = truth.catalogues, truth.photometric_scale
    k = truth.kernel
    lo = np.asarray(k.centre) - np.asarray(k.half_extent) - 0.5
    hi = np.asarray(k.centre) + np.asarray(k.half_extent) + 0.5
    parts = []
    for kind, name in (("star", "stars"), ("galaxy", "galaxies"), ("transient", "transients"),
                       ("variable", "variables")):
        c = cats[name]
        n = c["x"].size
        ft = c.get("flux_template", np.zeros(n))
        parts.append({
            "kind": np.full(n, kind, dtype="U9"), "x": c["x"], "y": c["y"],
            "x_template": c.get("x_template", np.full(n, np.nan)),
            "y_template": c.get("y_template", np.full(n, np.nan)),
            "flux_template": ft, "flux_science": c["flux_science"],
            "flux_difference": c["flux_science"] - scale * ft,
            "in_frame": (c["x"] >= lo[0]) & (c["x"] < hi[0]) & (c["y"] >= lo[1])
            & (c["y"] < hi[1]),
        })
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    units = {"x": "pix", "y": "pix", "x_template": "pix", "y_template": "pix",
             "flux_template": "adu", "flux_science": "adu", "flux_difference": "adu"}
    return columns, units


@dataclass(frozen=True)
class SimulatedPair:
    """Result of :func:`make_pair`."""

    template: Exposure
    science: Exposure
    truth: Truth


def _power_law(rng: np.random.Generator, n: int, p: SimulationParams) -> np.ndarray:
    """Inverse-CDF draw of dN/dF ∝ F**index on [flux_min, flux_max]."""
    a = p.flux_power_index + 1.0
    lo, hi = p.flux_min**a, p.flux_max**a
    return (lo + rng.random(n) * (hi - lo)) ** (1.0 / a)


def _rotation(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def _make_wcs(p: SimulationParams, crpix_parent: np.ndarray, rot: np.ndarray) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(p.sky_centre)
    wcs.wcs.crpix = list(crpix_parent - np.asarray(p.xy0, dtype=np.float64) + 1.0)
    wcs.wcs.cd = (p.pixel_scale / 3600.0) * np.diag([-1.0, 1.0]) @ rot
    wcs.pixel_shape = (p.shape[1], p.shape[0])
    return wcs


def _uniform_xy(rng: np.random.Generator, n: int, box: tuple[float, float, float, float]):
    x = box[0] + rng.random(n) * (box[2] - box[0])
    y = box[1] + rng.random(n) * (box[3] - box[1])
    return x, y


def _finish(p: SimulationParams, signal: np.ndarray, sky: float, rng_noise, rng_art,
            name: str, psf: SimulatedPsf, wcs: WCS) -> tuple[Exposure, dict[str, np.ndarray]]:
    """Noise, cosmic rays, saturation, bad column, masks and metadata for one image."""
    ny, nx = signal.shape
    g, rn = p.gain, p.read_noise
    total = np.clip(signal + sky, 0.0, None)
    variance = total / g + (rn / g) ** 2
    if p.add_noise:
        image = (rng_noise.poisson(total * g) + rng_noise.normal(0.0, rn, total.shape)) / g
        image -= sky
    else:
        image = signal.copy()
    mask = np.zeros(signal.shape, dtype=np.int32)
    bit = {k: 1 << v for k, v in DEFAULT_MASK_PLANES.items()}
    n = p.n_cosmic_rays
    x0 = rng_art.integers(1, nx - 3, n)
    y0 = rng_art.integers(1, ny - 3, n)
    length = rng_art.integers(1, 4, n)
    dirs = np.array([[1, 0], [0, 1], [1, 1], [1, -1]])[rng_art.integers(0, 4, n)]
    hit = np.repeat(np.arange(n), length)
    step = np.concatenate([np.arange(m) for m in length]) if n else np.zeros(0, int)
    cx = x0[hit] + dirs[hit, 0] * step
    cy = y0[hit] + dirs[hit, 1] * step
    cflux = rng_art.uniform(*p.cosmic_ray_flux_range, hit.size)
    np.add.at(image, (cy, cx), cflux)
    mask[cy, cx] |= bit["CR"]
    sat = image + sky >= p.saturation
    image[sat] = p.saturation - sky
    mask[sat] |= bit["SAT"]
    if p.bad_column is not None:
        image[:, p.bad_column] = BAD_COLUMN_VALUE
        mask[:, p.bad_column] |= bit["BAD"]
    meta = {"GAIN": float(g), "RDNOISE": float(rn), "SATURATE": float(p.saturation - sky),
            "SKYLEVEL": float(sky), "PSF_FWHM": psf.fwhm, "SIMSEED": int(p.seed),
            "SIMROLE": name, "BUNIT": "ADU"}
    exp = Exposure(image=image, mask=mask, variance=variance, wcs=wcs, psf=psf,
                   metadata=meta, xy0=p.xy0)
    crs = {"hit": hit, "x": cx + p.xy0[0], "y": cy + p.xy0[1], "flux": cflux}
    return exp, crs


def make_pair(params: SimulationParams) -> SimulatedPair:
    """Simulate a template/science pair with a known spatially varying matching kernel.

    Independent generators are derived from ``SeedSequence(params.seed)`` for the scene,
    template noise, science noise and artefacts; identical params give bitwise identical
    output. The science image is the template scene rendered on a grid padded by
    ``kernel_size // 2 + 1``, correlated with the truth kernel, cropped (no edge effects),
    plus background, transients and variable-flux changes (rendered with the local
    science PSF); see the module docstring for the full model.
    """
    p = params
    rng_scene, rng_tn, rng_sn, rng_art = (np.random.default_rng(s)
                                          for s in np.random.SeedSequence(p.seed).spawn(4))
    ny, nx = p.shape
    x0, y0 = p.xy0
    kernel = TruthKernel.from_params(p)
    sig_t = p.template_fwhm / SIGMA_TO_FWHM
    centre = np.asarray(kernel.centre)
    rot = _rotation(p.template_offset[2])
    shift_t = np.asarray(p.template_offset[:2])
    warped = any(v != 0.0 for v in p.template_offset)
    pad = p.kernel_size // 2 + 1

    # scene box (science parent coords) covering the padded science grid and the template
    corners = np.array([[x0 - 0.5, y0 - 0.5], [x0 + nx - 0.5, y0 - 0.5],
                        [x0 - 0.5, y0 + ny - 0.5], [x0 + nx - 0.5, y0 + ny - 0.5]])
    t_corners = centre + (corners - centre - shift_t) @ rot  # inverse transform R(-t)
    margin = pad + _STAMP_NSIGMA * math.hypot(sig_t, p.galaxy_sigma_range[1])
    lo = np.minimum(corners.min(0), t_corners.min(0)) - margin
    hi = np.maximum(corners.max(0), t_corners.max(0)) + margin
    box = (lo[0], lo[1], hi[0], hi[1])
    area = (hi[0] - lo[0]) * (hi[1] - lo[1])

    n_star = int(rng_scene.poisson(p.star_density * area / 1e6))
    sx, sy = _uniform_xy(rng_scene, n_star, box)
    sflux = _power_law(rng_scene, n_star, p)
    n_gal = int(rng_scene.poisson(p.galaxy_density * area / 1e6))
    gx, gy = _uniform_xy(rng_scene, n_gal, box)
    gflux = _power_law(rng_scene, n_gal, p)
    g_major = rng_scene.uniform(*p.galaxy_sigma_range, n_gal)
    g_q = rng_scene.uniform(0.3, 1.0, n_gal)
    g_pa = rng_scene.uniform(0.0, 180.0, n_gal)
    inner = (x0 + pad, y0 + pad, x0 + nx - 1 - pad, y0 + ny - 1 - pad)
    tx, ty = _uniform_xy(rng_scene, p.n_transients, inner)
    lo_f, hi_f = np.log(p.transient_flux_range)
    tflux = np.exp(rng_scene.uniform(lo_f, hi_f, p.n_transients))
    vx, vy = _uniform_xy(rng_scene, p.n_variables, inner)
    vflux_t = np.exp(rng_scene.uniform(lo_f, hi_f, p.n_variables)) / p.photometric_scale
    change = rng_scene.uniform(0.2, 1.0, p.n_variables) * rng_scene.choice([-1, 1], p.n_variables)
    vflux_s = p.photometric_scale * vflux_t * (1.0 + change)

    rots = np.array([_rotation(a) for a in g_pa]).reshape(-1, 2, 2)
    g_cov = rots @ (np.einsum("i,jk->ijk", g_major**2, np.diag([1.0, 0.0]))
                    + np.einsum("i,jk->ijk", (g_q * g_major) ** 2, np.diag([0.0, 1.0]))) \
        @ rots.transpose(0, 2, 1)
    psf_cov = sig_t**2 * np.eye(2)

    def render_scene(shape, origin, pos_fn, cov_fn):
        img = np.zeros(shape)
        px, py = pos_fn(np.concatenate([sx, vx]), np.concatenate([sy, vy]))
        render_gaussians(img, px, py, np.concatenate([sflux, vflux_t]), sig_t, xy0=origin)
        qx, qy = pos_fn(gx, gy)
        _render_ellipses(img, qx, qy, gflux, cov_fn(g_cov) + psf_cov, origin)
        return img

    def to_template(x, y):
        v = (np.stack([x, y], -1) - centre) @ rot.T + centre + shift_t
        return v[..., 0], v[..., 1]

    padded = render_scene((ny + 2 * pad, nx + 2 * pad), (x0 - pad, y0 - pad),
                          lambda x, y: (x, y), lambda c: c)
    if warped:
        template0 = render_scene((ny, nx), p.xy0, to_template, lambda c: rot @ c @ rot.T)
    else:
        template0 = padded[pad:-pad, pad:-pad].copy()

    science0 = kernel.apply(padded, xy0=(x0 - pad, y0 - pad))[pad:-pad, pad:-pad]
    yy = np.arange(ny, dtype=np.float64)[:, None] + y0
    xx = np.arange(nx, dtype=np.float64)[None, :] + x0
    truth_stub = Truth(params=p, kernel=kernel, photometric_scale=float(p.photometric_scale),
                       background=p.background, bad_column=p.bad_column)
    science0 += truth_stub.background_at(xx, yy)
    # transients and variable deltas with the local science PSF (Gaussian mixture)
    ex = np.concatenate([tx, vx - p.kernel_shift[0]])
    ey = np.concatenate([ty, vy - p.kernel_shift[1]])
    eflux = np.concatenate([tflux, vflux_s - p.photometric_scale * vflux_t])
    w = kernel.weights_at(ex, ey)
    for wj, sj in zip(w, kernel.sigmas, strict=True):
        render_gaussians(science0, ex, ey, eflux * wj, math.hypot(sig_t, sj), xy0=p.xy0)

    wcs_s = _make_wcs(p, centre, np.eye(2))
    wcs_t = _make_wcs(p, centre + shift_t, _rotation(-p.template_offset[2]))
    psf_t = SimulatedPsf(sig_t)
    psf_s = SimulatedPsf(sig_t, kernel)
    template, cr_t = _finish(p, template0, p.sky_template, rng_tn, rng_art, "template",
                             psf_t, wcs_t)
    science, cr_s = _finish(p, science0, p.sky_science, rng_sn, rng_art, "science",
                            psf_s, wcs_s)

    def in_frame(x, y):
        return (x >= x0 - 0.5) & (x < x0 + nx - 0.5) & (y >= y0 - 0.5) & (y < y0 + ny - 0.5)

    def sat_at(exp, x, y):
        inside = in_frame(x, y)
        col = np.clip(np.rint(x - x0).astype(int), 0, nx - 1)
        row = np.clip(np.rint(y - y0).astype(int), 0, ny - 1)
        return inside & exp.plane("SAT")[row, col]

    stx, sty = to_template(sx, sy)
    gtx, gty = to_template(gx, gy)
    vtx, vty = to_template(vx, vy)
    cats = {
        "stars": {"x": sx, "y": sy, "x_template": stx, "y_template": sty,
                  "flux_template": sflux, "flux_science": p.photometric_scale * sflux,
                  "in_frame": in_frame(sx, sy),
                  "saturated": sat_at(template, stx, sty)
                  | sat_at(science, sx - p.kernel_shift[0], sy - p.kernel_shift[1])},
        "galaxies": {"x": gx, "y": gy, "x_template": gtx, "y_template": gty,
                     "flux_template": gflux, "flux_science": p.photometric_scale * gflux,
                     "sigma_major": g_major, "axis_ratio": g_q, "position_angle": g_pa,
                     "in_frame": in_frame(gx, gy)},
        "transients": {"x": tx, "y": ty, "flux_science": tflux},
        "variables": {"x": vx, "y": vy, "x_template": vtx, "y_template": vty,
                      "flux_template": vflux_t, "flux_science": vflux_s,
                      "flux_difference": vflux_s - p.photometric_scale * vflux_t},
        "cosmic_rays_template": cr_t,
        "cosmic_rays_science": cr_s,
    }
    truth = Truth(params=p, kernel=kernel, photometric_scale=float(p.photometric_scale),
                  background=p.background, bad_column=p.bad_column, catalogues=cats)
    return SimulatedPair(template=template, science=science, truth=truth)
