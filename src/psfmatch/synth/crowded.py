"""A crowded simulated pair that fails the way real crowded fields do.

The demo simulator (:mod:`psfmatch.synth`) draws Gaussian stars on an empty sky; ten
times its density is still at the oracle. Real crowded fields differ in four ways, all
modelled here, with the matching kernel still known exactly:

* **Non-Gaussian PSF wings.** Template stars are Moffat profiles
  :math:`I(r) \\propto (1 + r^2/\\alpha^2)^{-\\beta}` (β ≈ 2.5; ``psf_profile:
  "gaussian"`` gives Gaussian stars instead, to separate the wings from the other
  effects), whose FWHM varies linearly across the field; the kernel has a Gaussian core
  plus a Moffat halo.
* **Blends and confusion.** A power-law luminosity function down to far below the
  detection limit at tens of thousands of stars per 10⁶ px: every bright star has
  neighbours inside its stamp and the sky is a sea of unresolved stars.
* **Kernel variation and sub-pixel offsets.** :math:`K_{x,y} = \\sum_j w_j(x,y) B_j`
  (the form of :class:`psfmatch.synth.TruthKernel`) with ``B_j`` anchored on a 3 × 3
  grid over the field and ``w_j`` the biquadratic Lagrange weights of that grid: each
  anchor kernel has its own width, ellipticity and sub-pixel centre (a registration
  residual that varies *non-linearly* across the field, as a distortion residual
  does), so a spatial model of order 1 cannot follow it exactly.
* **Saturation without a mask.** Both images are clipped at ``saturation`` (ADU above
  the sky) but no ``SAT`` plane is set (unless ``mask_saturation``) and no keyword
  records the level: the brightest stars, which a flux-ranked candidate list puts
  first, are flat-topped and do not obey ``S = K ⋆ T``.

Model: ``T = T₀ + n_T``; ``S = clip(K ⋆ T₀_padded + b(x, y)) + n_S`` with Poisson +
read noise in electrons, ``T`` clipped likewise; variance planes are the expected
variances (signal included). Both images carry one WCS (the pair is registered to the
pixel). No file I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.convolution import correlate_spatial
from psfmatch.exposure import DEFAULT_MASK_PLANES, Exposure

__all__ = ["PSF_PROFILES", "CrowdedKernel", "CrowdedPair", "CrowdedParams", "make_crowded_pair",
           "moffat_alpha", "render_moffats", "render_stars"]

#: Star profiles :attr:`CrowdedParams.psf_profile` accepts.
PSF_PROFILES = ("moffat", "gaussian")


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat scale α of a profile of ``fwhm`` (px): ``FWHM = 2α sqrt(2^{1/β} − 1)``."""
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


@dataclass(frozen=True, kw_only=True)
class CrowdedParams:
    """Knobs of :func:`make_crowded_pair` (defaults: a bulge-like field, 1 m class).

    ``template_fwhm`` / ``science_fwhm`` are the core FWHMs at the field centre (the
    kernel's Gaussian core has :math:`\\sigma_K^2 = \\sigma_S^2 - \\sigma_T^2` in the
    Gaussian approximation); ``psf_fwhm_gradient`` the fractional change of the template
    FWHM across the field; ``kernel_width_gradient`` the fractional change of the kernel
    width from the lower-left to the upper-right anchor and ``kernel_width_scatter`` a
    random fractional scatter per anchor; ``kernel_shift`` the mean centre and
    ``kernel_shift_scatter`` the per-anchor scatter (px) of the kernel centre;
    ``kernel_ellipticity`` the largest per-anchor ellipticity (random orientation);
    ``halo_fraction`` / ``halo_fwhm`` / ``halo_beta`` the
    kernel's Moffat halo; ``saturation`` the clip level above the sky (ADU) and
    ``mask_saturation`` whether it is flagged; ``psf_profile`` the stars' profile
    (``moffat`` with ``moffat_beta``, or ``gaussian``).
    """

    shape: tuple[int, int] = (768, 768)
    seed: int = 11
    star_density: float = 30000.0
    flux_min: float = 50.0
    flux_max: float = 3.0e7
    flux_power_index: float = -1.6
    template_fwhm: float = 4.5
    science_fwhm: float = 7.1
    psf_profile: str = "moffat"
    moffat_beta: float = 2.5
    psf_fwhm_gradient: float = 0.12
    kernel_width_gradient: float = 0.15
    kernel_shift: tuple[float, float] = (0.3, -0.2)
    kernel_shift_scatter: float = 0.25
    kernel_width_scatter: float = 0.06
    kernel_ellipticity: float = 0.08
    halo_fraction: float = 0.08
    halo_fwhm: float = 9.0
    halo_beta: float = 3.0
    kernel_size: int = 45
    photometric_scale: float = 0.85
    background: tuple[float, float, float] = (20.0, 8.0, -5.0)
    sky_template: float = 800.0
    sky_science: float = 1200.0
    gain: float = 2.0
    read_noise: float = 6.0
    saturation: float = 30000.0
    mask_saturation: bool = False
    n_transients: int = 15
    transient_flux_range: tuple[float, float] = (3000.0, 30000.0)

    def __post_init__(self) -> None:
        if self.psf_profile not in PSF_PROFILES:
            msg = f"psf_profile must be one of {PSF_PROFILES}, got {self.psf_profile!r}"
            raise ValueError(msg)


def _lagrange3(t):
    """Quadratic Lagrange weights of the nodes −1, 0, 1 at ``t`` (they sum to 1)."""
    t = np.asarray(t, dtype=np.float64)
    return np.stack([0.5 * t * (t - 1.0), 1.0 - t * t, 0.5 * t * (t + 1.0)])


@dataclass(frozen=True)
class CrowdedKernel:
    """:math:`K_{x,y} = \\sum_j w_j(x, y) B_j` over a 3 × 3 grid of anchor kernels.

    ``w_{3a+b}(u, v) = L_b(u) L_a(v)``, ``L`` the quadratic Lagrange weights of the nodes
    −1, 0, 1 and ``u, v ∈ [-1, 1]`` normalised science coordinates, so ``K`` equals
    anchor ``B_j`` at its node and varies biquadratically in between; every ``B_j`` sums
    to ``scale`` and so does ``K``. Same interface as :class:`psfmatch.synth.TruthKernel`
    (``kernel_at``, ``apply``, ``centre``).
    """

    basis: tuple[np.ndarray, ...]
    centre: tuple[float, float]
    half_extent: tuple[float, float]
    scale: float

    def weights_at(self, x, y):
        u = (np.asarray(x, dtype=np.float64) - self.centre[0]) / self.half_extent[0]
        v = (np.asarray(y, dtype=np.float64) - self.centre[1]) / self.half_extent[1]
        lu, lv = _lagrange3(u), _lagrange3(v)
        return np.stack([lv[a] * lu[b] for a in range(3) for b in range(3)])

    def kernel_at(self, x: float, y: float) -> np.ndarray:
        w = self.weights_at(x, y)
        return sum(float(wj) * b for wj, b in zip(w, self.basis, strict=True))

    def apply(self, image: np.ndarray, *, xy0: tuple[int, int] = (0, 0)) -> np.ndarray:
        ny, nx = np.shape(image)
        y = np.arange(ny, dtype=np.float64)[:, None] + xy0[1]
        x = np.arange(nx, dtype=np.float64)[None, :] + xy0[0]
        return correlate_spatial(image, self.basis, list(self.weights_at(x, y)))


@dataclass(frozen=True)
class CrowdedPair:
    """``template``, ``science`` (Exposures), the truth ``kernel``, ``background``
    coefficients and the ``stars`` catalogue (x, y science parent px, flux_template,
    saturated, in_frame), plus ``params``."""

    template: Exposure
    science: Exposure
    kernel: CrowdedKernel
    background: tuple[float, float, float]
    stars: dict[str, np.ndarray] = field(repr=False)
    params: CrowdedParams = field(repr=False)
    saturated: np.ndarray | None = field(default=None, repr=False)

    @property
    def photometric_scale(self) -> float:
        return self.params.photometric_scale

    def background_at(self, x, y):
        k = self.kernel
        u = (np.asarray(x, dtype=np.float64) - k.centre[0]) / k.half_extent[0]
        v = (np.asarray(y, dtype=np.float64) - k.centre[1]) / k.half_extent[1]
        b0, bx, by = self.background
        return b0 + bx * u + by * v


def render_moffats(image: np.ndarray, x, y, flux, fwhm, beta: float, *,
                   xy0: tuple[int, int] = (0, 0), chunk: int = 3_000_000) -> np.ndarray:
    """Add unit-integral point-sampled Moffat profiles to ``image`` in place.

    Each source adds ``flux · (β − 1)/(π α²) · (1 + r²/α²)^{−β}`` at the pixel centres of
    a stamp whose half-width grows with the flux (the profile is truncated where it falls
    below 1e-4 ADU, at most 80 px); ``x, y`` parent coordinates.
    """
    x, y, flux, fwhm = (np.atleast_1d(np.asarray(a, dtype=np.float64))
                        for a in np.broadcast_arrays(x, y, flux, fwhm))
    ny, nx = image.shape
    alpha = np.array([moffat_alpha(f, beta) for f in fwhm]) if fwhm.size else fwhm
    peak = flux * (beta - 1.0) / (math.pi * alpha**2)
    # r where peak (1 + r²/α²)^-β = 1e-4
    reach = alpha * np.sqrt(np.maximum((peak / 1e-4) ** (1.0 / beta) - 1.0, 1.0))
    half = np.clip(np.ceil(reach), 4, 80).astype(np.int64)
    for h in np.unique(half):
        sel = np.flatnonzero(half == h)
        offs = np.arange(-h, h + 1)
        step = max(1, chunk // offs.size**2)
        for s in range(0, sel.size, step):
            i = sel[s: s + step]
            cx = np.rint(x[i] - xy0[0]).astype(np.int64)
            cy = np.rint(y[i] - xy0[1]).astype(np.int64)
            ix = cx[:, None] + offs
            iy = cy[:, None] + offs
            dx = ix + xy0[0] - x[i, None]
            dy = iy + xy0[1] - y[i, None]
            r2 = dx[:, None, :] ** 2 + dy[:, :, None] ** 2
            a2 = alpha[i, None, None] ** 2
            val = peak[i, None, None] * (1.0 + r2 / a2) ** (-beta)
            ii = np.broadcast_to(ix[:, None, :], val.shape)
            jj = np.broadcast_to(iy[:, :, None], val.shape)
            ok = (ii >= 0) & (ii < nx) & (jj >= 0) & (jj < ny)
            image += np.bincount(jj[ok] * nx + ii[ok], weights=val[ok],
                                 minlength=nx * ny).reshape(ny, nx)
    return image


def render_stars(image: np.ndarray, x, y, flux, fwhm, *, profile: str, beta: float,
                 xy0: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Add unit-integral point-sampled stars of ``profile`` to ``image`` in place.

    ``moffat``: :func:`render_moffats` with ``beta``. ``gaussian``: Moffat profiles with
    a very large β (2000), Gaussians of the same FWHM for this purpose (the Moffat
    tends to a Gaussian as β → ∞; relative difference ≲ 0.2 % within one FWHM of the
    centre); same
    truncation and normalisation.
    """
    if profile not in PSF_PROFILES:
        msg = f"profile must be one of {PSF_PROFILES}, got {profile!r}"
        raise ValueError(msg)
    return render_moffats(image, x, y, flux, fwhm, beta if profile == "moffat" else 2000.0,
                          xy0=xy0)


def _kernel_basis(p: CrowdedParams, rng) -> tuple[np.ndarray, ...]:
    sig_t, sig_s = p.template_fwhm / SIGMA_TO_FWHM, p.science_fwhm / SIGMA_TO_FWHM
    sig_k = math.sqrt(sig_s**2 - sig_t**2)
    c = p.kernel_size // 2
    off = np.arange(p.kernel_size, dtype=np.float64) - c
    yy, xx = np.meshgrid(off, off, indexing="ij")
    out = []
    for a in range(3):
        for b in range(3):
            m = 0.5 * ((b - 1) + (a - 1))  # -1 lower left .. +1 upper right
            sig = sig_k * (1.0 + 0.5 * m * p.kernel_width_gradient
                           + p.kernel_width_scatter * rng.normal())
            dx, dy = np.asarray(p.kernel_shift) + p.kernel_shift_scatter * rng.normal(size=2)
            e, phi = p.kernel_ellipticity * rng.random(), math.pi * rng.random()
            # elliptical Gaussian: axes sig*sqrt(1±e), rotated by phi
            c_, s_ = math.cos(phi), math.sin(phi)
            xr = c_ * (xx - dx) + s_ * (yy - dy)
            yr = -s_ * (xx - dx) + c_ * (yy - dy)
            g = np.exp(-0.5 * (xr**2 / (sig**2 * (1 + e)) + yr**2 / (sig**2 * (1 - e))))
            halo = np.zeros_like(g)
            render_moffats(halo, c + dx, c + dy, 1.0, p.halo_fwhm, p.halo_beta)
            b = (1.0 - p.halo_fraction) * g / g.sum() + p.halo_fraction * halo / halo.sum()
            out.append(p.photometric_scale * b / b.sum())
    return tuple(out)


def _noisy(p: CrowdedParams, signal: np.ndarray, sky: float, rng) -> tuple[np.ndarray, ...]:
    total = np.clip(signal + sky, 0.0, None)
    variance = total / p.gain + (p.read_noise / p.gain) ** 2
    image = (rng.poisson(total * p.gain) + rng.normal(0.0, p.read_noise, total.shape)) / p.gain
    image -= sky
    saturated = image >= p.saturation
    image[saturated] = p.saturation
    mask = np.zeros(signal.shape, dtype=np.int32)
    if p.mask_saturation:
        mask[saturated] |= 1 << DEFAULT_MASK_PLANES["SAT"]
    return image, variance, mask, saturated


def _wcs(p: CrowdedParams):
    """One TAN WCS (0.4"/px) for both images: the pair is registered to the pixel, so the
    warp step passes the template through unresampled (the oracle stays exact)."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [270.0, -29.0]
    wcs.wcs.crpix = [p.shape[1] / 2.0 + 0.5, p.shape[0] / 2.0 + 0.5]
    wcs.wcs.cd = (0.4 / 3600.0) * np.diag([-1.0, 1.0])
    wcs.pixel_shape = (p.shape[1], p.shape[0])
    return wcs


def make_crowded_pair(p: CrowdedParams) -> CrowdedPair:
    """Simulate the pair (module docstring); seeded, bitwise reproducible."""
    rng_scene, rng_t, rng_s, rng_k = (np.random.default_rng(s)
                                      for s in np.random.SeedSequence(p.seed).spawn(4))
    ny, nx = p.shape
    pad = p.kernel_size // 2 + 1
    lo, hi = np.array([-pad - 40.0, -pad - 40.0]), np.array([nx + pad + 40.0, ny + pad + 40.0])
    area = float(np.prod(hi - lo))
    n = int(rng_scene.poisson(p.star_density * area / 1e6))
    sx = lo[0] + rng_scene.random(n) * (hi[0] - lo[0])
    sy = lo[1] + rng_scene.random(n) * (hi[1] - lo[1])
    a = p.flux_power_index + 1.0
    flux = (p.flux_min**a + rng_scene.random(n) * (p.flux_max**a - p.flux_min**a)) ** (1.0 / a)
    kernel = CrowdedKernel(_kernel_basis(p, rng_k), ((nx - 1) / 2.0, (ny - 1) / 2.0),
                           ((nx - 1) / 2.0, (ny - 1) / 2.0), p.photometric_scale)
    u = (sx - kernel.centre[0]) / kernel.half_extent[0]
    v = (sy - kernel.centre[1]) / kernel.half_extent[1]
    fwhm_t = p.template_fwhm * (1.0 + 0.25 * p.psf_fwhm_gradient * (u - v))
    padded = np.zeros((ny + 2 * pad, nx + 2 * pad))
    render_stars(padded, sx, sy, flux, fwhm_t, profile=p.psf_profile, beta=p.moffat_beta,
                 xy0=(-pad, -pad))
    template0 = padded[pad:-pad, pad:-pad].copy()
    science0 = kernel.apply(padded, xy0=(-pad, -pad))[pad:-pad, pad:-pad]
    yy = np.arange(ny, dtype=np.float64)[:, None]
    xx = np.arange(nx, dtype=np.float64)[None, :]
    stub = CrowdedPair(None, None, kernel, p.background, {}, p)
    science0 = science0 + stub.background_at(xx, yy)
    tx = pad + rng_scene.random(p.n_transients) * (nx - 2 * pad)
    ty = pad + rng_scene.random(p.n_transients) * (ny - 2 * pad)
    tflux = np.exp(rng_scene.uniform(*np.log(p.transient_flux_range), p.n_transients))
    fwhm_s_t = np.full(p.n_transients, p.science_fwhm)
    render_stars(science0, tx, ty, tflux, fwhm_s_t, profile=p.psf_profile, beta=p.moffat_beta)
    t_img, t_var, t_mask, t_sat = _noisy(p, template0, p.sky_template, rng_t)
    s_img, s_var, s_mask, s_sat = _noisy(p, science0, p.sky_science, rng_s)
    meta = {"GAIN": p.gain, "RDNOISE": p.read_noise, "BUNIT": "ADU"}
    template = Exposure(image=t_img, mask=t_mask, variance=t_var, wcs=_wcs(p),
                        metadata=dict(meta))
    science = Exposure(image=s_img, mask=s_mask, variance=s_var, wcs=_wcs(p),
                       metadata=dict(meta))
    col = np.clip(np.rint(sx).astype(int), 0, nx - 1)
    row = np.clip(np.rint(sy).astype(int), 0, ny - 1)
    in_frame = (sx >= -0.5) & (sx < nx - 0.5) & (sy >= -0.5) & (sy < ny - 0.5)
    from scipy.ndimage import binary_dilation

    grown = binary_dilation(t_sat | s_sat, iterations=3)
    stars = {"x": sx, "y": sy, "flux_template": flux, "fwhm_template": fwhm_t,
             "in_frame": in_frame, "saturated": in_frame & grown[row, col],
             "kind": np.full(n, "star", dtype="U9")}
    return CrowdedPair(template, science, kernel, p.background, stars, p, t_sat | s_sat)
