"""What each workflow step needs (memory, run time, CPUs) for an image of a given size.

The workflow's rules ask this module for their ``mem_mb``, ``runtime`` and
``cpus_per_task`` (see ``workflow/resources.smk``, ``step_resources``), so one table sizes
every job on a workstation and on SLURM alike, and a retried job asks for more.

Model
-----
Every step's peak resident memory is, to within a few per cent over 0.26–16.8 Mpix
(512² to 4096² simulated pairs, ``bench/resource_calibration.py``), affine in the number
of pixels :math:`N` of the pair's largest image:

.. math::  M_{\\rm peak}(N) = M_0 + m \\, N / 10^6 \\quad [\\mathrm{MB}]

:math:`M_0` is the interpreter plus the imported libraries (about 75–200 MB), :math:`m`
the step's working arrays per megapixel (an exposure of float32 image + int32 mask +
float32 variance is 12 MB/Mpix; the FFT-based steps hold several complex planes, hence
60–90 MB/Mpix). The table steps (kernel-sum clipping, spatial fit, assessment) scale
with the number of candidates, which ``detection.max_candidates`` caps; their small
per-pixel term is the measured growth up to 4096² and overestimates bigger images,
which errs on the safe side. The constants below are the fitted values rounded up by
about 10 %.

What a job declares is the peak with a margin, scaled by the attempt (a job killed for
memory and retried asks for twice, then three times as much):

.. math::  \\mathrm{mem\\_mb} = \\lceil 1.5 \\, M_{\\rm peak}(N) \\, a \\rceil_{100}

Run time is estimated the same way, :math:`t = t_0 + \\tau N/10^6` seconds (measured on
a shared 2-core machine), and declared with a factor 10 for slower nodes and shared file
systems, at least 3 minutes, times the attempt. Warp (row bands on up to 4 threads) and
convolve (multithreaded FFTs) use more than one CPU on large images: 1 CPU below 16 Mpix
(4096²), 2 below 64 Mpix, then 4. All other steps are single-threaded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from psfmatch.errors import ConfigError, MemoryBudgetError
from psfmatch.io.headers import read_image_shape

__all__ = [
    "STEP_COSTS",
    "StepCost",
    "StepResources",
    "check_memory",
    "check_step_memory",
    "estimate",
    "peak_memory_mb",
]

#: Safety factor between the estimated peak memory and what a job declares.
MEMORY_MARGIN = 1.5
#: Safety factor between the estimated run time and the declared time limit.
RUNTIME_MARGIN = 10.0
#: Shortest time limit a job declares, minutes.
MIN_RUNTIME_MIN = 3


@dataclass(frozen=True)
class StepCost:
    """Calibrated cost of one step: ``base + per_mpix * N / 1e6`` for memory and time."""

    base_mb: float
    mb_per_mpix: float
    base_s: float
    s_per_mpix: float
    multithreaded: bool = False


#: Per-step costs (``bench/resource_calibration.py``; fitted values rounded up ~10 %).
#: ``final_kernel`` runs the spatial-fit code on the last assessment.
STEP_COSTS: dict[str, StepCost] = {
    "simulate": StepCost(175, 72, 2.0, 0.6),
    "ingest": StepCost(55, 24, 2.0, 0.2),
    "warp": StepCost(55, 9, 2.0, 0.3, multithreaded=True),
    "detect": StepCost(235, 45, 3.0, 1.0),
    "select": StepCost(150, 33, 2.0, 0.25),
    "fit_single_kernels": StepCost(150, 4, 2.0, 0.3),
    "kernel_sum_clip": StepCost(150, 1, 2.0, 0.1),
    "spatial_fit": StepCost(150, 6, 2.0, 0.1),
    "final_kernel": StepCost(150, 6, 2.0, 0.1),
    "assess": StepCost(150, 6, 2.0, 0.15),
    "convolve": StepCost(205, 16, 2.0, 0.6, multithreaded=True),
    # qa's memory calibrated with the others (its time: one 1024² demo run, rounded up).
    "qa": StepCost(245, 122, 4.0, 5.0),
    "simulated_psf": StepCost(150, 0, 2.0, 0.0),
    "model_psf_kernel": StepCost(150, 50, 2.0, 1.0),
    "model_psf_convolve": StepCost(180, 90, 2.0, 0.6, multithreaded=True),
    # DIA sources: memory calibrated with the others; times from 1024² and 2048²
    # true-kernel pairs on a loaded 2-core machine (8.2 / 26.4 s, 9.2 / 10.0 s), rounded up.
    "detect_dia_sources": StepCost(175, 222, 3.0, 6.0),
    "qa_dia": StepCost(250, 84, 6.0, 0.5),
    # subtraction modes: subtraction_mode and decorrelate calibrated with the others;
    # preconvolve (not in the default DAG): VmHWM of the 1024² and 2048² pairs (165 / 372
    # MB), fitted and rounded up ~10 %
    "subtraction_mode": StepCost(90, 33, 2.0, 0.3),
    "preconvolve": StepCost(110, 75, 2.0, 0.3, multithreaded=True),
    "decorrelate": StepCost(155, 42, 2.0, 1.2, multithreaded=True),
}


@dataclass(frozen=True)
class StepResources:
    """What one job of a step declares to the scheduler."""

    mem_mb: int
    runtime: int  # minutes
    cpus_per_task: int


def _cost(step: str) -> StepCost:
    try:
        return STEP_COSTS[step]
    except KeyError:
        known = ", ".join(sorted(STEP_COSTS))
        raise ConfigError(f"no resource model for step {step!r}; known steps: {known}") from None


def _check_pixels(n_pixels: int) -> None:
    if not isinstance(n_pixels, int | float) or not n_pixels > 0 or not math.isfinite(n_pixels):
        raise ConfigError(f"number of pixels must be a positive number, got {n_pixels!r}")


def peak_memory_mb(step: str, n_pixels: int) -> float:
    """Estimated peak resident memory (MB) of ``step`` on an image of ``n_pixels`` pixels."""
    _check_pixels(n_pixels)
    cost = _cost(step)
    return cost.base_mb + cost.mb_per_mpix * n_pixels / 1e6


def estimate(step: str, n_pixels: int, attempt: int = 1) -> StepResources:
    """Resources ``step`` declares for an image of ``n_pixels`` pixels on try ``attempt``.

    ``mem_mb`` is the estimated peak times :data:`MEMORY_MARGIN` times ``attempt``,
    rounded up to 100 MB; ``runtime`` (minutes) the estimated time times
    :data:`RUNTIME_MARGIN` (at least :data:`MIN_RUNTIME_MIN`) times ``attempt``;
    ``cpus_per_task`` 1, or 2 / 4 for the multithreaded steps from 16 / 64 Mpix.
    """
    if not isinstance(attempt, int) or attempt < 1:
        raise ConfigError(f"attempt must be an integer >= 1, got {attempt!r}")
    cost = _cost(step)
    mpix = n_pixels / 1e6
    mem_mb = 100 * math.ceil(MEMORY_MARGIN * peak_memory_mb(step, n_pixels) * attempt / 100)
    seconds = cost.base_s + cost.s_per_mpix * mpix
    runtime = max(MIN_RUNTIME_MIN, math.ceil(RUNTIME_MARGIN * seconds / 60)) * attempt
    cpus = 1
    if cost.multithreaded:
        cpus = 1 if mpix < 16 else 2 if mpix < 64 else 4
    return StepResources(mem_mb=int(mem_mb), runtime=int(runtime), cpus_per_task=cpus)


def check_memory(step: str, *, shape: tuple[int, int], declared_mem_mb: float) -> float:
    """Raise :class:`MemoryBudgetError` if ``step`` on a ``shape`` image needs more than declared.

    Returns the estimated peak (MB) when it fits. Call it at the start of a job, so that a
    job declared too small stops at once with the numbers, rather than being killed by the
    scheduler (or swapping) in the middle of the work.
    """
    ny, nx = (int(v) for v in shape)
    peak = peak_memory_mb(step, ny * nx)
    if declared_mem_mb is None or not declared_mem_mb >= peak:
        raise MemoryBudgetError(
            f"step {step!r}: a {nx}x{ny} image ({ny * nx / 1e6:.1f} Mpix) needs about "
            f"{peak:.0f} MB at its peak (psfmatch.resources estimate), but the job declares "
            f"mem_mb={declared_mem_mb}; raise mem_mb for this rule (e.g. "
            f"--set-resources {step}:mem_mb={estimate(step, ny * nx).mem_mb})"
        )
    return peak


def check_step_memory(
    step: str,
    images: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    declared_mem_mb: float,
) -> float:
    """:func:`check_memory` for the largest of ``images`` (shapes read from their headers)."""
    paths = [images] if isinstance(images, str | os.PathLike) else list(images)
    shapes = [read_image_shape(p) for p in paths]
    largest = max(shapes, key=lambda s: s[0] * s[1])
    return check_memory(step, shape=largest, declared_mem_mb=declared_mem_mb)
