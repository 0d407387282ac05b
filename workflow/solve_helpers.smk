# Helpers of the kernel solve (rules in workflow/solve.smk): which candidate table each
# spatial iteration starts from, and the tables of every iteration.


def ksum_input(wildcards):
    """Iteration 0 clips the single-kernel table; later ones the previous assessment."""
    i = int(wildcards.iteration)
    if i == 0:
        return f"results/{wildcards.pair}/fit/candidates.parquet"
    return f"results/{wildcards.pair}/iter{i - 1}/assess.parquet"


def final_assessment(wildcards):
    """The assessment of the last spatial iteration."""
    return f"results/{wildcards.pair}/iter{N_ITERATIONS - 1}/assess.parquet"


def ksum_tables(wildcards):
    """The kernel-sum tables of every spatial iteration (their clip statistics)."""
    return [
        f"results/{wildcards.pair}/iter{i}/ksum.parquet" for i in range(N_ITERATIONS)
    ]
