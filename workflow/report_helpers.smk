# Helpers of the QA plots (workflow/report.smk) and of the run summary the Snakefile's
# handlers write. The list of plots is psfmatch.qa.QA_PLOTS (one table: key, what it
# shows, report subcategory and label; captions workflow/report/qa_<key>.rst).
import mimetypes  # noqa: E402

from psfmatch.logs import read_failure  # noqa: E402
from psfmatch.qa import QA_PLOTS, qa_plot_keys  # noqa: E402
from psfmatch.steps.summary import pair_outcome, qa_summary  # noqa: E402

QA_SUMMARY = {"table": "results/qa/summary.parquet", "html": "results/qa/summary.html"}
# Snakemake's report() flag; the Snakefile parser takes `report` at the start of a line
# for the global `report:` directive, so the helpers below call it by this name.
report_flag = report
# The summary is an input of `all` (in the Snakefile), hence an absolute caption path.
# The report embeds files with the type mimetypes guesses; Parquet is not in its table.
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")
QA_SUMMARY_CAPTION = str(
    Path(workflow.basedir) / "workflow" / "report" / "qa_summary.rst"
)
_LOG_SUFFIX = r"(\.(template|science|iter\d+))?\.log"


def qa_plot_path(pair, key):
    return f"results/{pair}/qa/{key}.png"


def qa_plot_outputs(rule):
    """Named, report-flagged outputs of a QA rule (`qa`, `qa_dia`; one category per pair)."""
    return {
        key: report_flag(
            qa_plot_path("{pair}", key),
            caption=f"report/qa_{key}.rst",
            category="{pair}",
            subcategory=QA_PLOTS[key].subcategory,
            labels={"plot": QA_PLOTS[key].label},
        )
        for key in qa_plot_keys(rule)
    }


def pair_logs(pair):
    """Step logs of one pair: logs/<step>/<pair>[.<role>|.iter<i>].log -> step name."""
    pattern = re.compile(re.escape(pair) + _LOG_SUFFIX)
    return {
        str(path): path.parent.name
        for path in sorted(Path("logs").glob(f"*/{pair}*.log"))
        if pattern.fullmatch(path.name)
    }


def qa_last_attempt_failed(pair, keys=tuple(QA_PLOTS)):
    """True if the pair lacks one of these QA plots and one of its step logs records an error.

    Such a pair gets none of these QA targets, so that `snakemake --report` builds from
    what exists (a report-flagged file that is missing stops the report). A pair that
    succeeds on a later run gets its plots on the run after (its row in the summary says
    how many plots it has). Each QA rule's plots are decided apart: a pair whose DIA step
    failed keeps its kernel and residual plots.
    """
    if all(Path(qa_plot_path(pair, key)).is_file() for key in keys):
        return False
    return any(read_failure(path) is not None for path in pair_logs(pair))


def qa_outputs():
    """QA plots of every pair not known to have failed, and the run summary once written."""
    rules = dict.fromkeys(spec.rule for spec in QA_PLOTS.values())
    outputs = [
        qa_plot_path(pair, key)
        for pair in PAIRS
        for rule in rules
        if DIA_ACTIVE or rule != "qa_dia"
        if not qa_last_attempt_failed(pair, qa_plot_keys(rule))
        for key in qa_plot_keys(rule)
    ]
    if all(Path(path).is_file() for path in QA_SUMMARY.values()):
        outputs += [
            report_flag(
                QA_SUMMARY["html"],
                caption=QA_SUMMARY_CAPTION,
                category="run summary",
                labels={"table": "summary (HTML)"},
            ),
            report_flag(
                QA_SUMMARY["table"],
                caption=QA_SUMMARY_CAPTION,
                category="run summary",
                labels={"table": "summary (Parquet)"},
            ),
        ]
    return outputs


def write_run_summary():
    """One row per pair from the products and logs that exist (Snakefile handlers)."""
    rows = [
        pair_outcome(
            pair=pair,
            metrics_path=f"results/{pair}/metrics.json",
            plot_paths=[qa_plot_path(pair, key) for key in QA_PLOTS],
            logs=pair_logs(pair),
            dia_path=f"results/{pair}/dia_sources.parquet",
            warp_path=f"results/{pair}/warp/warp.json",
        )
        for pair in PAIRS
    ]
    Path(QA_SUMMARY["table"]).parent.mkdir(parents=True, exist_ok=True)
    qa_summary(rows=rows, table_path=QA_SUMMARY["table"], html_path=QA_SUMMARY["html"])
    for row in rows:
        if row["status"] != "ok":
            print(
                f"psfmatch: pair {row['pair']!r} {row['status']}: {row['error']}",
                file=sys.stderr,
            )
    print(
        f"psfmatch: run summary written to {QA_SUMMARY['table']} and {QA_SUMMARY['html']}",
        file=sys.stderr,
    )
