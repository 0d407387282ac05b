"""Rule assess: spatial-model residuals per candidate, rejection and promotion."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.solve import assess
from psfmatch.steps.subtraction import expected_success

label = f"pair {snakemake.wildcards.pair!r}"  # noqa: F821
with log_to_file(snakemake.log[0]), expected_success(snakemake.input.mode, label):  # noqa: F821
    assess(
        candidates_path=snakemake.input.candidates,
        stamps_path=snakemake.input.stamps,
        kernel_path=snakemake.input.kernel,
        output_candidates=snakemake.output.candidates,
        config=snakemake.params.config,
        iteration=int(snakemake.wildcards.iteration),
        label=label,
    )
