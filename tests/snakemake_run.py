"""Run the repository's Snakefile in a scratch working directory (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """``python -m snakemake`` on the repository's Snakefile, in ``workdir``."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), *args]


def run_snakemake(workdir: Path, *args: str, timeout: float = 1200,
                  cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run it to completion, capturing stdout and stderr (never raises on failure).

    ``cwd``: the process's working directory (relative ``--configfile`` paths are
    relative to it); default: the caller's.
    """
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd)
