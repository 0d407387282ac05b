"""How many threads the linear-algebra libraries of a psfmatch process start.

Snakemake runs every step with ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ... set to
the rule's ``threads`` (1 for the fitting steps). Outside Snakemake (the tests, a
library user) OpenBLAS would start one thread per core: the per-candidate fits solve
thousands of small systems, where extra threads only spin (``fit_single_kernels`` at
4096²: 7.4 s of CPU with 2 threads against 1.9 s with 1, on 2 cores), and a different
thread count changes the last bits of the results. :func:`default_blas_threads` sets
the same default (1) for any process that imports :mod:`psfmatch.steps` before numpy;
a value already in the environment wins, and once numpy is loaded nothing changes.
"""

from __future__ import annotations

import os

__all__ = ["THREAD_VARIABLES", "default_blas_threads"]

#: The variables Snakemake sets for a job's threads (those the BLAS/OpenMP builds read).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def default_blas_threads(threads: int = 1) -> dict[str, str]:
    """Default each of :data:`THREAD_VARIABLES` to ``threads`` where it is not set.

    Effective only before numpy (and its BLAS) is first imported. Returns the values now
    in force.
    """
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(max(1, int(threads))))
    return {name: os.environ[name] for name in THREAD_VARIABLES}
