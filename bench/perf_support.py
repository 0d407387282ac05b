"""Helpers of bench/performance.py: HOTPANTS inputs and the fidelity figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.diagnostics import STATS_BAD_PLANES
from psfmatch.synth import Truth


def hotpants_inputs(exposure_path: Path, image_path: Path, noise_path: Path) -> None:
    """HOTPANTS's inputs from an afw-layout exposure: the image with its sky and 1σ noise.

    The simulated images are sky-subtracted; HOTPANTS's lower limits (``-tl 1 -il 1``)
    assume counts with the sky, so the header ``SKYLEVEL`` is added back. Pixels without
    data (non-finite, variance <= 0) become 0 (below ``-tl``: flagged by HOTPANTS).
    """
    from astropy.io import fits

    exposure = io.read_exposure(exposure_path)
    bad = ~np.isfinite(exposure.image) | ~np.isfinite(exposure.variance) \
        | ~(exposure.variance > 0)
    sky = float(exposure.metadata.get("SKYLEVEL", 0.0))
    image = np.where(bad, 0.0, exposure.image + sky).astype(np.float32)
    noise = np.sqrt(np.where(bad, 1e30, exposure.variance)).astype(np.float32)
    fits.PrimaryHDU(image).writeto(image_path, overwrite=True)
    fits.PrimaryHDU(noise).writeto(noise_path, overwrite=True)


def fidelity(work: Path, hotpants_diff: Path | None) -> dict[str, Any]:
    """Kernel sum, kernel L1 error and std(D/σ) on star pixels (see performance.py)."""
    r = work / "results"
    truth = Truth.from_dict(io.read_json(r / "simulated/bench/truth.json"))
    science = io.read_exposure(r / "bench/input/science.fits")
    template = io.read_exposure(r / "bench/warp/template.fits")
    raw = io.read_exposure(r / "bench/convolve/difference.fits")
    ny, nx = science.shape
    no_data = template.plane_bitmask(["NO_DATA"])
    clean = np.where(np.isfinite(template.image) & ((template.mask & no_data) == 0),
                     template.image, 0.0)
    yy, xx = np.mgrid[0:ny, 0:nx]
    oracle = science.image - truth.kernel.apply(clean, xy0=science.xy0) \
        - truth.background_at(xx + science.xy0[0], yy + science.xy0[1])
    del yy, xx, clean
    sigma = np.sqrt(raw.variance.astype(np.float64))
    good = ((raw.mask & raw.plane_bitmask(STATS_BAD_PLANES)) == 0) & np.isfinite(raw.image) \
        & np.isfinite(sigma)
    hp = None
    if hotpants_diff is not None and hotpants_diff.exists():
        from astropy.io import fits

        hp = fits.getdata(hotpants_diff).astype(np.float64)
        good &= np.isfinite(hp) & (np.abs(hp) > 1e-20)
        hp -= np.median((hp - oracle)[good])  # HOTPANTS keeps the sky: its offset out

    table = io.read_table(r / "bench/final/candidates.parquet").columns
    used = table["status"] == "GOOD"
    stamp_boxes = [(y0, y1, x0, x1) for x0, y0, x1, y1 in zip(
        *(table[c][used] - o for c, o in (("stamp_x0", science.xy0[0]),
                                          ("stamp_y0", science.xy0[1]),
                                          ("stamp_x1", science.xy0[0]),
                                          ("stamp_y1", science.xy0[1]))), strict=True)]
    sources = io.read_table(r / "simulated/bench/sources.parquet").columns
    star = (sources["kind"] == "star") & (sources["flux_template"] >= 1e3) \
        & (sources["flux_template"] <= 5e4)
    x = np.rint(sources["x"][star]).astype(int) - science.xy0[0]
    y = np.rint(sources["y"][star]).astype(int) - science.xy0[1]
    inside = (x >= 40) & (x < nx - 40) & (y >= 40) & (y < ny - 40)
    star_boxes = [(b - 10, b + 10, a - 10, a + 10) for a, b in zip(x[inside], y[inside],
                                                                  strict=True)]

    def stds(boxes: list[tuple[int, int, int, int]]) -> dict[str, float]:
        sel = np.zeros((ny, nx), dtype=bool)
        for y0, y1, x0, x1 in boxes:
            sel[y0 : y1 + 1, x0 : x1 + 1] = True
        sel &= good
        out = {"n_pixels": int(sel.sum()), "oracle": float((oracle[sel] / sigma[sel]).std()),
               "psfmatch": float((raw.image[sel] / sigma[sel]).std())}
        if hp is not None:
            out["hotpants"] = float((hp[sel] / sigma[sel]).std())
        return out

    kernel = io.read_kernel(r / "bench/kernel.fits")
    l1 = []
    for px, py in [((nx - 1) / 2, (ny - 1) / 2), (50, 50), (nx - 50, 50), (50, ny - 50),
                   (nx - 50, ny - 50)]:
        fitted = kernel.image_at(px + science.xy0[0], py + science.xy0[1])
        true = truth.kernel.kernel_at(px + science.xy0[0], py + science.xy0[1])
        c = (true.shape[0] - fitted.shape[0]) // 2
        if c > 0:
            true = true[c:-c, c:-c]
        elif c < 0:
            fitted = fitted[-c:c, -c:c]
        l1.append(float(np.abs(fitted - true).sum() / np.abs(true).sum()))
    return {"kernel_sum": float(kernel.kernel_sum), "truth_sum": truth.photometric_scale,
            "l1": l1, "stamps": stds(stamp_boxes), "stars": stds(star_boxes)}
