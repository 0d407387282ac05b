"""Oracle comparison of a difference image with the one the true kernel gives.

Shared by the fidelity integration tests and bench/fidelity. ``std(D/σ)`` on *star
pixels* (within ``1.5 · FWHM`` of bright, unsaturated, in-frame truth stars, without
the statistics' bad planes), with one ``σ`` for both differences:
``sqrt(var_S + K_c² ⋆ var_T)``, ``K_c`` the true kernel at the centre, so the fitted
kernel does not scale its own yardstick.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from psfmatch import io
from psfmatch.convolution import correlate
from psfmatch.diagnostics import STATS_BAD_PLANES


def star_pixels(sources, shape, *, fwhm, shift, flux_min=2000.0, radius=None) -> np.ndarray:
    """Pixels near bright (template flux ≥ ``flux_min``) unsaturated in-frame stars."""
    ny, nx = shape
    r = 1.5 * fwhm if radius is None else radius
    sel = (sources["kind"] == "star") & sources["in_frame"] & (sources["flux_template"] >= flux_min)
    if "saturated" in sources:
        sel &= ~np.asarray(sources["saturated"], dtype=bool)
    out = np.zeros(shape, dtype=bool)
    ri = int(np.ceil(r))
    oy, ox = np.mgrid[-ri:ri + 1, -ri:ri + 1]
    disk = ox**2 + oy**2 <= r * r
    for xi, yi in zip(sources["x"][sel] - shift[0], sources["y"][sel] - shift[1], strict=True):
        yy, xx = int(round(yi)) + oy[disk], int(round(xi)) + ox[disk]
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        out[yy[ok], xx[ok]] = True
    return out


def true_difference(truth, science, template) -> np.ndarray:
    """``S − K_true ⋆ T − b_true`` (template NaNs as 0)."""
    ny, nx = science.shape
    clean = np.where(np.isfinite(template.image), template.image, 0.0)
    y, x = np.mgrid[0:ny, 0:nx]
    return (science.image - truth.kernel.apply(clean, xy0=science.xy0)
            - truth.background_at(x + science.xy0[0], y + science.xy0[1]))


def oracle_sigma(truth, science, template, usable) -> np.ndarray:
    """``sqrt(var_S + K_c² ⋆ var_T)`` (1 where not usable)."""
    k = truth.kernel.kernel_at(*truth.kernel.centre)
    vt = np.where(np.isfinite(template.variance), template.variance, 0.0)
    var = science.variance + correlate(vt, k * k)
    return np.sqrt(np.where(usable & (var > 0), var, 1.0))


def residual_detections(z, usable, fwhm, *, threshold=5.0) -> int:
    """Number of ≥ ``threshold`` σ blobs (either sign) of ``z`` filtered by the PSF.

    ``z`` is filtered by a Gaussian of ``fwhm`` and divided by the robust std of the
    filtered image over usable pixels (at least 90 % usable within the filter), so the
    count is of sources, not of a mis-estimated noise level; blobs are 8-connected.
    """
    zz = np.where(usable & np.isfinite(z), z, 0.0)
    sig = fwhm / 2.3548
    f = ndimage.gaussian_filter(zz, sig)
    good = usable & (ndimage.gaussian_filter(usable.astype(float), sig) > 0.9)
    vals = f[good]
    s = f / (1.4826 * np.median(np.abs(vals - np.median(vals))))
    return sum(ndimage.label((sign * s >= threshold) & good, structure=np.ones((3, 3)))[1]
               for sign in (1, -1))


def compare(products, science_path, truth, sources, *, fwhm, shift, flux_min=2000.0,
            saturated=None) -> dict:
    """Oracle ratio, 5σ residual detections (fitted and true) and the kernel-sum error.

    ``saturated`` (bool image, optional): pixels within ``3 · FWHM`` of it are left out
    of the star pixels (a clipped star is not ``K ⋆ T`` for any kernel); the detections
    away from them are ``det5_fit_unsat`` / ``det5_true_unsat``. Also returned, for
    callers that measure more: the star-pixel stds, ``z_fit``, ``z_true`` (D/σ of the
    fitted and the true-kernel difference) and the ``usable`` pixels.
    """
    science = io.read_exposure(science_path)
    template = io.read_exposure(products["warped.fits"])
    diff = io.read_exposure(products["difference.fits"])
    kernel = io.read_kernel(products["kernel.fits"])
    bad = diff.plane_bitmask(STATS_BAD_PLANES)
    usable = ((diff.mask & bad) == 0) & np.isfinite(diff.image) & (diff.variance > 0)
    sigma = oracle_sigma(truth, science, template, usable)
    stars = star_pixels(sources, diff.shape, fwhm=fwhm, shift=shift, flux_min=flux_min) & usable
    z_fit = diff.image / sigma
    z_true = true_difference(truth, science, template) / sigma
    extra = {}
    if saturated is not None:
        near = ndimage.binary_dilation(saturated, iterations=int(3 * fwhm))
        stars &= ~near
        extra = {"det5_fit_unsat": residual_detections(z_fit, usable & ~near, fwhm),
                 "det5_true_unsat": residual_detections(z_true, usable & ~near, fwhm)}
    std_fit, std_true = float(z_fit[stars].std()), float(z_true[stars].std())
    return {"oracle_ratio": std_fit / std_true,
            "std_star_fit": std_fit, "std_star_true": std_true,
            "det5_fit": residual_detections(z_fit, usable, fwhm),
            "det5_true": residual_detections(z_true, usable, fwhm),
            "kernel_sum_error": kernel.kernel_sum / truth.photometric_scale - 1.0,
            "kernel": kernel, "n_star_pixels": int(stars.sum()),
            "z_fit": z_fit, "z_true": z_true, "usable": usable, **extra}


def relative_l1(kernel, truth_kernel, x, y) -> float:
    """``Σ|K_fit − K_true| / Σ|K_true|`` at ``(x, y)`` (the truth cropped to the fit's size)."""
    fitted = kernel.image_at(x, y)
    true = truth_kernel.kernel_at(x, y)
    c = (true.shape[0] - fitted.shape[0]) // 2
    true = true[c:-c, c:-c] if c > 0 else true
    return float(np.abs(fitted - true).sum() / np.abs(true).sum())
