"""Rule warp: resample the template onto the science pixel grid."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.resources import check_step_memory
from psfmatch.steps.prepare import warp

with log_to_file(snakemake.log[0]):  # noqa: F821
    check_step_memory(snakemake.rule, snakemake.input, snakemake.resources.mem_mb)  # noqa: F821
    warp(
        template_path=snakemake.input.template,
        science_path=snakemake.input.science,
        output_path=snakemake.output.template,
        info_path=snakemake.output.info,
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
    )
