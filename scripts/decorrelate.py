"""Rule decorrelate: variance rescaling, decorrelation, the final difference (or score)."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.resources import check_step_memory
from psfmatch.steps.finalize import decorrelate

with log_to_file(snakemake.log[0]):  # noqa: F821
    check_step_memory(snakemake.rule, snakemake.input.science, snakemake.resources.mem_mb)  # noqa: F821
    decorrelate(
        raw_path=snakemake.input.raw,
        raw_metrics_path=snakemake.input.raw_metrics,
        template_path=snakemake.input.template,
        science_path=snakemake.input.science,
        subtracted_path=snakemake.input.subtracted,
        kernel_path=snakemake.input.kernel,
        mode_path=snakemake.input.mode,
        psf_path=snakemake.input.psf,
        output_path=snakemake.output.image,
        metrics_path=snakemake.output.metrics,
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
        difference_psf_path=snakemake.output.get("psf"),
        preconvolution_psf_path=snakemake.input.get("preconvolution_psf"),
    )
