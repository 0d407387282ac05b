"""Rule convolve: apply the kernel to the image the mode says, subtract: the raw difference."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.resources import check_step_memory
from psfmatch.steps.difference import convolve

with log_to_file(snakemake.log[0]):  # noqa: F821
    check_step_memory(snakemake.rule, snakemake.input.science, snakemake.resources.mem_mb)  # noqa: F821
    convolve(
        template_path=snakemake.input.template,
        science_path=snakemake.input.science,
        kernel_path=snakemake.input.kernel,
        candidates_path=snakemake.input.candidates,
        difference_path=snakemake.output.difference,
        matched_path=snakemake.output.get("matched"),
        metrics_path=snakemake.output.metrics,
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
        mode_path=snakemake.input.mode,
    )
