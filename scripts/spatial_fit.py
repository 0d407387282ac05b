"""Rules spatial_fit and final_kernel: joint spatial kernel and background fit."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.solve import spatial_fit
from psfmatch.steps.subtraction import expected_success

label = f"pair {snakemake.wildcards.pair!r}"  # noqa: F821
with log_to_file(snakemake.log[0]), expected_success(snakemake.input.mode, label):  # noqa: F821
    spatial_fit(
        candidates_path=snakemake.input.candidates,
        kernels_path=snakemake.input.kernels,
        stamps_path=snakemake.input.stamps,
        output_kernel=snakemake.output.kernel,
        output_candidates=snakemake.output.candidates,
        config=snakemake.params.config,
        iteration=snakemake.wildcards.get("iteration", "final"),
        label=label,
        mode_path=snakemake.input.mode,
    )
