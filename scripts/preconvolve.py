"""Rule preconvolve: the science image correlated with its own PSF."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.resources import check_step_memory
from psfmatch.steps.subtraction import preconvolve

with log_to_file(snakemake.log[0]):  # noqa: F821
    check_step_memory(snakemake.rule, snakemake.input.science, snakemake.resources.mem_mb)  # noqa: F821
    preconvolve(
        science_path=snakemake.input.science,
        psf_path=snakemake.input.psf,
        output_path=snakemake.output.science,
        psf_output_path=snakemake.output.psf,
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
    )
