"""Making a pair: the scene, the kernel, noise, artefacts and WCSs (:func:`make_pair`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.exposure import DEFAULT_MASK_PLANES, Exposure
from psfmatch.synth.params import BAD_COLUMN_VALUE, STAMP_NSIGMA, SimulationParams
from psfmatch.synth.render import SimulatedPsf, render_ellipses, render_gaussians
from psfmatch.synth.truth import Truth, TruthKernel


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
    science PSF); see the module docstring for the full model. With
    ``blurrier="template"`` the roles of the two images are exchanged: the blurred image
    (with the background) is the template, the sharp one (with the transients and
    variable changes, sharp PSF) the science image.
    """
    p = params
    rng_scene, rng_tn, rng_sn, rng_art = (np.random.default_rng(s)
                                          for s in np.random.SeedSequence(p.seed).spawn(4))
    ny, nx = p.shape
    x0, y0 = p.xy0
    kernel = TruthKernel.from_params(p)
    sig_t = p.sharp_fwhm / SIGMA_TO_FWHM  # the scene's (sharp image's) PSF
    centre = np.asarray(kernel.centre)
    rot = _rotation(p.template_offset[2])
    shift_t = np.asarray(p.template_offset[:2])
    warped = any(v != 0.0 for v in p.template_offset)
    pad = p.kernel_size // 2 + 1

    # scene box (science parent coords) covering the padded science grid and the template
    corners = np.array([[x0 - 0.5, y0 - 0.5], [x0 + nx - 0.5, y0 - 0.5],
                        [x0 - 0.5, y0 + ny - 0.5], [x0 + nx - 0.5, y0 + ny - 0.5]])
    t_corners = centre + (corners - centre - shift_t) @ rot  # inverse transform R(-t)
    margin = pad + STAMP_NSIGMA * math.hypot(sig_t, p.galaxy_sigma_range[1])
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
        render_ellipses(img, qx, qy, gflux, cov_fn(g_cov) + psf_cov, origin)
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

    blurred = kernel.apply(padded, xy0=(x0 - pad, y0 - pad))[pad:-pad, pad:-pad]
    yy = np.arange(ny, dtype=np.float64)[:, None] + y0
    xx = np.arange(nx, dtype=np.float64)[None, :] + x0
    truth_stub = Truth(params=p, kernel=kernel, photometric_scale=float(p.photometric_scale),
                       background=p.background, bad_column=p.bad_column)
    blurred += truth_stub.background_at(xx, yy)
    swapped = p.blurrier == "template"
    if swapped:
        # the sharp image is the science image: transients and the variables' changes
        # (science flux vflux_t (1 + change) against template flux scale * vflux_t)
        # rendered with the sharp PSF at the scene positions
        science0, template0 = template0, blurred
        render_gaussians(science0, np.concatenate([tx, vx]), np.concatenate([ty, vy]),
                         np.concatenate([tflux, vflux_t * change]), sig_t, xy0=p.xy0)
    else:
        science0 = blurred
        # transients and variable deltas with the local science PSF (Gaussian mixture)
        ex = np.concatenate([tx, vx - p.kernel_shift[0]])
        ey = np.concatenate([ty, vy - p.kernel_shift[1]])
        eflux = np.concatenate([tflux, vflux_s - p.photometric_scale * vflux_t])
        w = kernel.weights_at(ex, ey)
        for fraction, jx, jy in kernel.peaks():
            for wj, sj in zip(w, kernel.sigmas, strict=True):
                render_gaussians(science0, ex - jx, ey - jy, fraction * eflux * wj,
                                 math.hypot(sig_t, sj), xy0=p.xy0)

    wcs_s = _make_wcs(p, centre, np.eye(2))
    wcs_t = _make_wcs(p, centre + shift_t, _rotation(-p.template_offset[2]))
    psf_t = SimulatedPsf(sig_t)
    psf_s = SimulatedPsf(sig_t, kernel)
    if swapped:
        psf_t, psf_s = psf_s, psf_t
    if swapped:
        # noise and artefact streams follow the image (sharp first), so that with equal
        # skies and no transients or variables the pair is the forward pair, roles swapped
        science, cr_s = _finish(p, science0, p.sky_science, rng_tn, rng_art, "science",
                                psf_s, wcs_s)
        template, cr_t = _finish(p, template0, p.sky_template, rng_sn, rng_art, "template",
                                 psf_t, wcs_t)
    else:
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

    s = p.photometric_scale
    if swapped:  # template centroids are moved by the kernel shift; fluxes scale by s
        dx, dy = p.kernel_shift
        vflux_s = vflux_t * (1.0 + change)
        cats = {
            "stars": {"x": sx, "y": sy, "x_template": sx - dx, "y_template": sy - dy,
                      "flux_template": s * sflux, "flux_science": sflux,
                      "in_frame": in_frame(sx, sy),
                      "saturated": sat_at(template, sx - dx, sy - dy) | sat_at(science, sx, sy)},
            "galaxies": {"x": gx, "y": gy, "x_template": gx - dx, "y_template": gy - dy,
                         "flux_template": s * gflux, "flux_science": gflux,
                         "sigma_major": g_major, "axis_ratio": g_q, "position_angle": g_pa,
                         "in_frame": in_frame(gx, gy)},
            "variables": {"x": vx, "y": vy, "x_template": vx - dx, "y_template": vy - dy,
                          "flux_template": s * vflux_t, "flux_science": vflux_s,
                          "flux_difference": vflux_s - vflux_t},
        }
    else:
        stx, sty = to_template(sx, sy)
        gtx, gty = to_template(gx, gy)
        vtx, vty = to_template(vx, vy)
        cats = {
            "stars": {"x": sx, "y": sy, "x_template": stx, "y_template": sty,
                      "flux_template": sflux, "flux_science": s * sflux,
                      "in_frame": in_frame(sx, sy),
                      "saturated": sat_at(template, stx, sty)
                      | sat_at(science, sx - p.kernel_shift[0], sy - p.kernel_shift[1])},
            "galaxies": {"x": gx, "y": gy, "x_template": gtx, "y_template": gty,
                         "flux_template": gflux, "flux_science": s * gflux,
                         "sigma_major": g_major, "axis_ratio": g_q, "position_angle": g_pa,
                         "in_frame": in_frame(gx, gy)},
            "variables": {"x": vx, "y": vy, "x_template": vtx, "y_template": vty,
                          "flux_template": vflux_t, "flux_science": vflux_s,
                          "flux_difference": vflux_s - s * vflux_t},
        }
    cats["transients"] = {"x": tx, "y": ty, "flux_science": tflux}
    cats = {k: cats[k] for k in ("stars", "galaxies", "transients", "variables")}
    cats["cosmic_rays_template"] = cr_t
    cats["cosmic_rays_science"] = cr_s
    truth = Truth(params=p, kernel=kernel, photometric_scale=float(s),
                  background=p.background, bad_column=p.bad_column, catalogues=cats,
                  convolved="science" if swapped else "template")
    return SimulatedPair(template=template, science=science, truth=truth)

