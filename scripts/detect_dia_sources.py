"""Rule detect_dia_sources: DIA sources of one pair (catalogue and cut-outs)."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.resources import check_step_memory
from psfmatch.steps.dia import detect_dia_sources

with log_to_file(snakemake.log[0]):  # noqa: F821
    check_step_memory(snakemake.rule, snakemake.input.science, snakemake.resources.mem_mb)  # noqa: F821
    detect_dia_sources(
        difference_path=snakemake.input.difference,
        science_path=snakemake.input.science,
        template_path=snakemake.input.template,
        candidates_path=snakemake.input.candidates,
        psf_path=snakemake.input.psf,
        kernel_path=snakemake.input.get("kernel"),
        difference_psf_path=snakemake.input.get("difference_psf"),
        catalogue_path=snakemake.output.catalogue,
        cutouts_path=snakemake.output.cutouts,
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
    )
