"""Rule kernel_sum_clip: reject kernel-sum outliers among the active candidates."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.steps.solve import kernel_sum_clip
from psfmatch.steps.subtraction import expected_success

label = f"pair {snakemake.wildcards.pair!r}"  # noqa: F821
with log_to_file(snakemake.log[0]), expected_success(snakemake.input.mode, label):  # noqa: F821
    kernel_sum_clip(
        candidates_path=snakemake.input.candidates,
        output_candidates=snakemake.output.candidates,
        config=snakemake.params.config,
        iteration=int(snakemake.wildcards.iteration),
        label=label,
    )
