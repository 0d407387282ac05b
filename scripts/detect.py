"""Rule detect: find kernel candidates and measure the PSF FWHMs."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.resources import check_step_memory
from psfmatch.steps.prepare import detect

with log_to_file(snakemake.log[0]):  # noqa: F821
    check_step_memory(snakemake.rule, snakemake.input.science, snakemake.resources.mem_mb)  # noqa: F821
    detect(
        template_path=snakemake.input.template,
        science_path=snakemake.input.science,
        candidates_path=snakemake.output.candidates,
        psf_path=snakemake.output.psf,
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
        mode_path=snakemake.input.mode,
    )
