"""How many CPUs a step may use: the ones it was given, not every CPU of the node."""

from __future__ import annotations

import os

__all__ = ["available_cpus"]


def available_cpus() -> int:
    """CPUs this process may use (at least 1).

    ``SLURM_CPUS_PER_TASK`` when SLURM set it (a job of ``cpus_per_task`` CPUs on a node
    shared with other jobs, even without CPU binding), else the process' CPU affinity
    (``taskset``, cgroup cpusets), else ``os.cpu_count()``. Multithreaded numerical code
    (FFT workers, the warp's row blocks) uses this so that a job never oversubscribes the
    node it shares.
    """
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
