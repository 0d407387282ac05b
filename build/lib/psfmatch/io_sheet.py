"""Read and validate the pairs sheet (``config/pairs.tsv``).

Every problem is reported with the sheet's path and the 1-based line number of the row
(the header is line 1), so a user can go straight to it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from psfmatch.errors import PairsSheetError

__all__ = ["ROLES", "read_pairs"]

ROLES = ("template", "science")
_NUMERIC_SUFFIXES = ("_gain",)
_PATH_SUFFIXES = ("", "_variance", "_weight", "_error", "_mask", "_psf")


def read_pairs(
    path: str | Path,
    *,
    schema: Mapping[str, Any],
    produced: Iterable[str] = (),
    base_dir: str | Path = ".",
) -> dict[str, dict[str, Any]]:
    """Parse a tab-separated pairs sheet into ``{pair_id: row}``, in sheet order.

    Parameters
    ----------
    path : str or Path
        The sheet. First line is the header; blank lines and lines starting with
        ``#`` are skipped.
    schema : mapping
        JSON Schema of one row (``workflow/schemas/pairs.schema.yaml``).
    produced : iterable of str
        Paths that the workflow itself produces (e.g. simulated images); they need
        not exist yet.
    base_dir : str or Path
        Directory that relative paths in the sheet are relative to.

    Returns
    -------
    dict
        Row dictionaries without empty cells; ``*_gain`` cells as floats.

    Raises
    ------
    PairsSheetError
        Missing sheet, missing/unknown columns, a row failing the schema, a duplicate
        pair id, or an input file that neither exists nor is produced by the workflow.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"pairs sheet {path} does not exist"
        raise PairsSheetError(msg)
    with path.open(newline="", encoding="utf-8") as handle:
        lines = [
            (number, line)
            for number, line in enumerate(handle, start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not lines:
        msg = f"pairs sheet {path} is empty (a header line 'pair<TAB>template<TAB>science' is required)"
        raise PairsSheetError(msg)
    reader = csv.reader([line for _, line in lines], delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = list(reader)
    header = [cell.strip() for cell in rows[0]]
    known = set(schema.get("properties", {}))
    missing = [col for col in schema.get("required", []) if col not in header]
    if missing:
        msg = f"pairs sheet {path} line {lines[0][0]}: missing column(s) {missing}; header is {header}"
        raise PairsSheetError(msg)
    unknown = [col for col in header if col not in known]
    if unknown:
        msg = f"pairs sheet {path} line {lines[0][0]}: unknown column(s) {unknown}; allowed: {sorted(known)}"
        raise PairsSheetError(msg)
    if len(set(header)) != len(header):
        msg = f"pairs sheet {path} line {lines[0][0]}: duplicate column names in {header}"
        raise PairsSheetError(msg)

    produced_set = {str(Path(p)) for p in produced}
    validator = jsonschema.Draft202012Validator(schema)
    pairs: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    for (number, _), cells in zip(lines[1:], rows[1:], strict=True):
        where = f"pairs sheet {path} line {number}"
        if len(cells) != len(header):
            msg = f"{where}: {len(cells)} cells but the header has {len(header)} columns"
            raise PairsSheetError(msg)
        row = _parse_row(dict(zip(header, (c.strip() for c in cells), strict=True)), where)
        errors = sorted(validator.iter_errors(row), key=lambda e: list(e.path))
        if errors:
            err = errors[0]
            column = ".".join(str(p) for p in err.path) or "(row)"
            msg = f"{where}, column {column!r}: {err.message}"
            raise PairsSheetError(msg)
        pair = row["pair"]
        if pair in pairs:
            msg = f"{where}: duplicate pair id {pair!r} (first used on line {first_line[pair]})"
            raise PairsSheetError(msg)
        _check_files(row, where, produced_set, Path(base_dir))
        pairs[pair] = row
        first_line[pair] = number
    return pairs


def _parse_row(cells: dict[str, str], where: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column, value in cells.items():
        if value == "":
            continue
        if column.endswith(_NUMERIC_SUFFIXES):
            try:
                row[column] = float(value)
            except ValueError:
                msg = f"{where}, column {column!r}: expected a number, got {value!r}"
                raise PairsSheetError(msg) from None
        else:
            row[column] = value
    return row


def _check_files(row: Mapping[str, Any], where: str, produced: set[str], base: Path) -> None:
    for role in ROLES:
        for suffix in _PATH_SUFFIXES:
            column = role + suffix
            if column not in row:
                continue
            value = row[column]
            if str(Path(value)) in produced:
                continue
            if not (base / value).is_file():
                msg = f"{where}, column {column!r}: file {value!r} does not exist"
                raise PairsSheetError(msg)
        given = [s for s in ("_variance", "_weight", "_error") if role + s in row]
        if len(given) > 1:
            msg = f"{where}: give at most one of {[role + s for s in given]}"
            raise PairsSheetError(msg)
