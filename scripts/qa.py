"""Rule qa: the QA plots of one pair from its products."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.qa import qa_plot_keys
from psfmatch.steps.report import qa

with log_to_file(snakemake.log[0]):  # noqa: F821
    qa(
        science_path=snakemake.input.science,
        template_path=snakemake.input.template,
        difference_path=snakemake.input.difference,
        kernel_path=snakemake.input.kernel,
        candidates_path=snakemake.input.candidates,
        ksum_paths=list(snakemake.input.ksum),
        stamps_path=snakemake.input.stamps,
        metrics_path=snakemake.input.metrics,
        outputs={key: snakemake.output[key] for key in qa_plot_keys("qa")},
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
    )
