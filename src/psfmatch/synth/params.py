"""The simulator's parameters (:class:`SimulationParams`) and their checks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.errors import ConfigError

BAD_COLUMN_VALUE = 1.0e5  #: garbage value written into the bad column (ADU)
STAMP_NSIGMA = 6.0  #: rendered stamps reach this many sigma


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
        Gaussian PSF FWHM (px) of the template and, at the image centre, the science
        (with ``blurrier="template"``: of the science image and, at the centre, the
        template).
    kernel_width_gradient : float
        ``(sigma_max - sigma_min) / sigma_centre`` of the matching kernel's width between
        the two extreme corners along ``kernel_gradient_angle``; in ``[0, 1)``.
    kernel_gradient_angle : float
        Direction (deg from +x) of the kernel-width gradient; 0 < angle < 90 mixes x and y.
    kernel_shift : (float, float)
        Kernel centroid offset ``(dx, dy)`` in px (stars move by minus this).
    tracking_jump : (float, float, float)
        ``(dx, dy, fraction)``: a second kernel peak offset by ``(dx, dy)`` px from the
        first carrying ``fraction`` of the flux (0 = none; fraction in [0, 1)).
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
    blurrier : {"science", "template"}
        Which output image is the blurred one, ``K ⋆ scene + b``. ``"science"`` (default):
        the truth kernel maps the template onto the science image. ``"template"``: the
        sharp image is written as the science image (with the transients and variable
        changes) and the blurred one as the template; ``template_fwhm > science_fwhm``;
        the truth kernel maps the science image onto the template (``T = K ⋆ S + b``,
        sum ``photometric_scale`` = template counts per science count);
        ``template_offset`` must be zero.
    """

    shape: tuple[int, int] = (1024, 1024)
    seed: int = 42
    template_fwhm: float = 3.0
    science_fwhm: float = 4.5
    kernel_width_gradient: float = 0.15
    kernel_gradient_angle: float = 30.0
    kernel_shift: tuple[float, float] = (0.0, 0.0)
    tracking_jump: tuple[float, float, float] = (0.0, 0.0, 0.0)
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
    blurrier: str = "science"

    @property
    def sharp_fwhm(self) -> float:
        """FWHM (px) of the sharp image's Gaussian PSF (the scene's)."""
        return self.science_fwhm if self.blurrier == "template" else self.template_fwhm

    @property
    def blurred_fwhm(self) -> float:
        """FWHM (px) of the blurred image's PSF at the image centre."""
        return self.template_fwhm if self.blurrier == "template" else self.science_fwhm

    def __post_init__(self) -> None:  # noqa: C901 - a flat list of checks
        tuples = {"shape": 2, "kernel_shift": 2, "tracking_jump": 3, "background": 3,
                  "galaxy_sigma_range": 2, "cosmic_ray_flux_range": 2, "transient_flux_range": 2,
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
        if self.blurrier not in ("science", "template"):
            _fail("blurrier", self.blurrier, "'science' or 'template'")
        if self.blurrier == "science" and self.science_fwhm <= self.template_fwhm:
            _fail("science_fwhm", self.science_fwhm,
                  f"> template_fwhm = {self.template_fwhm} (the kernel convolves the template)")
        if self.blurrier == "template":
            if self.template_fwhm <= self.science_fwhm:
                _fail("template_fwhm", self.template_fwhm,
                      f"> science_fwhm = {self.science_fwhm} with blurrier='template'")
            if any(v != 0.0 for v in self.template_offset):
                _fail("template_offset", self.template_offset,
                      "zero with blurrier='template' (the blurred image is made on the "
                      "science grid)")
        if self.kernel_width_gradient >= 1.0:
            _fail("kernel_width_gradient", self.kernel_width_gradient, "< 1")
        if not 0.0 <= self.tracking_jump[2] < 1.0:
            _fail("tracking_jump", self.tracking_jump, "(dx, dy, fraction) with 0 <= fraction < 1")
        jump = self.tracking_jump[:2] if self.tracking_jump[2] > 0 else (0.0, 0.0)
        sig_max = 5.0 * kernel_sigmas(self)[1] + max(
            abs(s) + max(0.0, abs(j)) for s, j in zip(self.kernel_shift, jump, strict=True))
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
    sig_k2 = (params.blurred_fwhm**2 - params.sharp_fwhm**2) / SIGMA_TO_FWHM**2
    g = params.kernel_width_gradient
    d = math.sqrt(max(0.0, 1.0 - (1.0 - 0.5 * g * g) ** 2))
    return (math.sqrt(sig_k2 * (1.0 - d)), math.sqrt(sig_k2 * (1.0 + d)))
