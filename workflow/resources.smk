# Software environment and job resources of every rule.
#
# Each step declares `conda: "../envs/psfmatch.yaml"`, `container: PSFMATCH_CONTAINER` and
# `resources: **step_resources("<step>")`: mem_mb, runtime (minutes) and cpus_per_task
# computed by psfmatch.resources from the size of the pair's images (read from the FITS
# headers, no pixels) and the attempt number, so a retried job asks for more memory.
import os

from psfmatch.errors import InputFileError  # noqa: E402
from psfmatch.io.headers import read_image_shape  # noqa: E402
from psfmatch.resources import estimate  # noqa: E402

# The project image (Containerfile). A local Apptainer image file by default, in the
# working directory; PSFMATCH_CONTAINER may name another file or a registry URL
# (docker://..., oras://...). Used with `--software-deployment-method apptainer`.
PSFMATCH_CONTAINER = os.environ.get(
    "PSFMATCH_CONTAINER", f"psfmatch-{psfmatch.__version__}.sif"
)

# Pixels assumed for an image that does not exist yet when Snakemake builds the DAG (and is
# not one of our simulated images). Resources are evaluated again just before a job is
# submitted, when its inputs exist, so this only matters for members of a group job whose
# inputs are made inside the group. 4096² errs on the large side for typical CCDs.
FALLBACK_PIXELS = 4096 * 4096

_PIXEL_CACHE = {}


def _simulated_pixels(path):
    for name, block in SIMULATED.items():
        if path in (f"results/simulated/{name}/{role}.fits" for role in SIM_ROLES):
            ny, nx = block.get(
                "shape", (1024, 1024)
            )  # psfmatch.synth.SimulationParams default
            return ny * nx
    return None


def image_pixels(path):
    """Pixels of the image at `path` (its header), or a stand-in while it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return _simulated_pixels(path) or FALLBACK_PIXELS
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _PIXEL_CACHE:
        try:
            ny, nx = read_image_shape(path)
        except InputFileError:
            # an unreadable image fails in its ingest job with the full message
            return FALLBACK_PIXELS
        _PIXEL_CACHE[key] = ny * nx
    return _PIXEL_CACHE[key]


def pair_pixels(wildcards):
    """Pixels of the larger of a pair's two input images (the sheet's paths)."""
    row = PAIRS[wildcards.pair]
    return max(image_pixels(row[role]) for role in SIM_ROLES)


def _job_pixels(wildcards):
    if "pair" in wildcards.keys():
        return pair_pixels(wildcards)
    if "sim" in wildcards.keys():
        ny, nx = SIMULATED[wildcards.sim].get("shape", (1024, 1024))
        return ny * nx
    if "exposure" in wildcards.keys():
        return image_pixels(EXPOSURES[wildcards.exposure]["image"])
    return FALLBACK_PIXELS


def step_resources(step):
    """Resource callables of one step, for `resources: **step_resources(step)`."""
    estimate(step, 1)  # an unknown step fails at parse time, naming the known ones

    def resource(name):
        def evaluate(wildcards, attempt):
            return getattr(estimate(step, _job_pixels(wildcards), attempt), name)

        return evaluate

    return {name: resource(name) for name in ("mem_mb", "runtime", "cpus_per_task")}


def step_threads(step):
    """Threads of one step (= its cpus_per_task), for `threads: step_threads(step)`."""

    def evaluate(wildcards):
        return estimate(step, _job_pixels(wildcards)).cpus_per_task

    return evaluate
