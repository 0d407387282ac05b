"""Rule qa_dia: the DIA QA plots of one pair."""

# `snakemake` (inputs, outputs, params, log) is injected by Snakemake's script preamble.
from psfmatch.logs import log_to_file
from psfmatch.qa import qa_plot_keys
from psfmatch.steps.dia_qa import qa_dia

with log_to_file(snakemake.log[0]):  # noqa: F821
    qa_dia(
        difference_path=snakemake.input.difference,
        catalogue_path=snakemake.input.catalogue,
        cutouts_path=snakemake.input.cutouts,
        outputs={key: snakemake.output[key] for key in qa_plot_keys("qa_dia")},
        config=snakemake.params.config,
        label=f"pair {snakemake.wildcards.pair!r}",
    )
