"""Benchmark registration by sources on simulated pairs: accuracy at the corners and time.

Usage (from the repository root, in the installed environment)::

    python bench/register_benchmark.py --size 1024 --seeds 3 [--astroalign]

For each case (shift, rotation, template/science FWHM) and seed, a pair is simulated with
:func:`psfmatch.synth.make_pair` (``template_offset``: the true science -> template map is
``c + R (s - c) + d``), its WCSs dropped, and :func:`psfmatch.register.register_exposures`
timed. Printed per run: the largest distance to the truth over the four image corners
(px), the fit's own 2-D 1-sigma error there, the number of matched stars and the wall time.
With ``--astroalign`` (if installed) ``astroalign.find_transform`` is run on the same
images (masked pixels masked) for comparison.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from psfmatch.register import AffineTransform, RegistrationError, register_exposures
from psfmatch.synth import SimulationParams, make_pair

CASES = [  # (dx, dy, rotation deg, template FWHM, science FWHM)
    (-22.4, 48.7, 0.3, 3.0, 4.5),
    (100.0, -100.0, 0.3, 3.0, 4.5),
    (-100.0, 100.0, 3.0, 3.0, 4.5),
    (-22.4, 48.7, 0.3, 2.5, 5.0),
    (100.0, 100.0, 3.0, 2.5, 5.0),
]


def corner_error(mapping, truth: AffineTransform, shape) -> float:
    ny, nx = shape
    x = np.array([0.0, nx - 1, 0.0, nx - 1])
    y = np.array([0.0, 0.0, ny - 1, ny - 1])
    fx, fy = mapping(x, y)
    tx, ty = truth(x, y)
    return float(np.max(np.hypot(fx - tx, fy - ty)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--density", type=float, default=1500.0, help="stars per Mpix")
    parser.add_argument("--astroalign", action="store_true")
    args = parser.parse_args()
    n = args.size
    if args.astroalign:
        import astroalign

    for dx, dy, rot, fwhm_t, fwhm_s in CASES:
        print(f"shift ({dx}, {dy}) px, rotation {rot} deg, FWHM {fwhm_t} -> {fwhm_s} px")
        for seed in range(args.seeds):
            params = SimulationParams(shape=(n, n), template_offset=(dx, dy, rot),
                                      seed=100 + seed, template_fwhm=fwhm_t,
                                      science_fwhm=fwhm_s, star_density=args.density)
            pair = make_pair(params)
            sci, tmp = pair.science.with_(wcs=None), pair.template.with_(wcs=None)
            c = np.array([(n - 1) / 2.0, (n - 1) / 2.0])
            t = math.radians(rot)
            r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
            truth = AffineTransform(r, c + np.array([dx, dy]) - r @ c)
            start = time.perf_counter()
            try:
                found = register_exposures(sci, tmp)
            except RegistrationError as err:
                print(f"  seed {seed}: FAILED {err}")
                continue
            wall = time.perf_counter() - start
            x = np.array([0.0, n - 1, 0.0, n - 1])
            formal = math.sqrt(2.0) * float(found.position_error(x, x[[0, 0, 3, 3]]).max())
            line = (f"  seed {seed}: corner error {corner_error(found, truth, sci.shape):.4f} px "
                    f"(formal {formal:.4f}), {found.n_matches} stars, {wall:.2f} s")
            if args.astroalign:
                bad = sci.plane_bitmask(["BAD", "SAT", "CR", "NO_DATA", "EDGE"])
                images = [np.ma.masked_array(e.image.astype(np.float64), (e.mask & bad) != 0)
                          for e in (sci, tmp)]
                start = time.perf_counter()
                try:
                    tf, (points, _) = astroalign.find_transform(*images)
                except Exception as err:  # astroalign raises bare exceptions
                    line += f" | astroalign FAILED {err}"
                else:
                    wall = time.perf_counter() - start

                    def mapped(xx, yy, tf=tf):
                        out = tf(np.column_stack([xx, yy]))
                        return out[:, 0], out[:, 1]

                    line += (f" | astroalign {corner_error(mapped, truth, sci.shape):.4f} px, "
                             f"{len(points)} stars, {wall:.2f} s")
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
