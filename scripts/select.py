"""Rule select: vet candidates, assign cells, cut stamps."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.resources import check_step_memory
from psfmatch.steps.prepare import select
from psfmatch.steps.subtraction import expected_success

label = f"pair {snakemake.wildcards.pair!r}"  # noqa: F821
with log_to_file(snakemake.log[0]), expected_success(snakemake.input.mode, label):  # noqa: F821
    check_step_memory(snakemake.rule, snakemake.input.science, snakemake.resources.mem_mb)  # noqa: F821
    select(
        template_path=snakemake.input.template,
        science_path=snakemake.input.science,
        candidates_path=snakemake.input.candidates,
        psf_path=snakemake.input.psf,
        output_candidates=snakemake.output.candidates,
        output_stamps=snakemake.output.stamps,
        config=snakemake.params.config,
        label=label,
        mode_path=snakemake.input.mode,
    )
