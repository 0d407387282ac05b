"""Rule assess: spatial-model residuals per candidate, rejection and promotion."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.solve import assess

with log_to_file(snakemake.log[0]):  # noqa: F821
    assess(
        candidates_path=snakemake.input.candidates,
        stamps_path=snakemake.input.stamps,
        kernel_path=snakemake.input.kernel,
        output_candidates=snakemake.output.candidates,
        config=snakemake.params.config,
        iteration=int(snakemake.wildcards.iteration),
        label=f"pair {snakemake.wildcards.pair!r}",
    )
