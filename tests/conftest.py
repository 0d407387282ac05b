"""Shared test fixtures and paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from psfmatch.threads import default_blas_threads

# one BLAS thread, as Snakemake runs the steps (set before any test imports numpy)
default_blas_threads()

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where Snakefile lives)."""
    return REPO
