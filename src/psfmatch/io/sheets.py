"""Read and validate the pairs sheet (``config/pairs.tsv``) and the exposures sheet.

Every problem is reported with the sheet's path and the 1-based line number of the row
(the header is line 1), so a user can go straight to it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from psfmatch.errors import ExposuresSheetError, PairsSheetError

__all__ = ["ROLES", "read_exposures", "read_pairs"]

ROLES = ("template", "science")
_NUMERIC_SUFFIXES = ("_gain", "gain", "_saturation")
#: Columns naming an extension: a number is an HDU index, anything else an EXTNAME.
_HDU_SUFFIX = "_hdu"
_PATH_SUFFIXES = ("", "_variance", "_weight", "_error", "_mask", "_psf")
_EXPOSURE_PATH_COLUMNS = ("image", "psf", "variance", "weight", "error", "mask")


def read_pairs(
    path: str | Path,
    *,
    schema: Mapping[str, Any],
    produced: Iterable[str] = (),
    base_dir: str | Path = ".",
    missing_files: str = "error",
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
    missing_files : {"error", "record"}
        What an input file that neither exists nor is produced does: ``"error"`` raises;
        ``"record"`` keeps the row and lists the problems under the row's ``"missing"``
        key (``{column: message}``), so that the workflow fails only that pair's job
        (one bad file costs one pair, not the run).

    Returns
    -------
    dict
        Row dictionaries without empty cells; ``*_gain`` and ``*_saturation`` cells as
        floats, ``*_hdu`` cells as integers when they are digits (an HDU index), else
        strings (an extension name).

    Raises
    ------
    PairsSheetError
        Missing sheet, missing/unknown columns, a row failing the schema, a duplicate
        pair id, or (with ``missing_files="error"``) an input file that neither exists
        nor is produced by the workflow.
    """
    if missing_files not in ("error", "record"):
        msg = f"missing_files must be 'error' or 'record', got {missing_files!r}"
        raise ValueError(msg)
    produced_set = {str(Path(p)) for p in produced}
    pairs: dict[str, dict[str, Any]] = {}
    for where, row in _read_sheet(path, schema, "pairs", "pair", PairsSheetError):
        missing = _check_files(row, where, produced_set, Path(base_dir))
        if missing and missing_files == "error":
            raise PairsSheetError(next(iter(missing.values())))
        if missing:
            row["missing"] = missing
        pairs[row["pair"]] = row
    return pairs


def read_exposures(
    path: str | Path,
    *,
    schema: Mapping[str, Any],
    produced: Iterable[str] = (),
    base_dir: str | Path = ".",
) -> dict[str, dict[str, Any]]:
    """Parse the model-PSF-matching exposures sheet into ``{id: row}``, in sheet order.

    Same rules as :func:`read_pairs` (header line, ``#`` comments, schema per row,
    unique ids, every file column must exist or be produced by the workflow), for the
    columns of ``workflow/schemas/exposures.schema.yaml``. Each row also records its
    sheet line as ``_line`` (for error messages of later steps).

    Raises
    ------
    ExposuresSheetError
        Naming the sheet, the line and the column.
    """
    produced_set = {str(Path(p)) for p in produced}
    base = Path(base_dir)
    exposures: dict[str, dict[str, Any]] = {}
    for where, row in _read_sheet(path, schema, "exposures", "id", ExposuresSheetError):
        for column in _EXPOSURE_PATH_COLUMNS:
            value = row.get(column)
            if (value is not None and str(Path(value)) not in produced_set
                    and not (base / value).is_file()):
                msg = f"{where}, column {column!r}: file {value!r} does not exist"
                raise ExposuresSheetError(msg)
        given = [c for c in ("variance", "weight", "error") if c in row]
        if len(given) > 1:
            msg = f"{where}: give at most one of {given}"
            raise ExposuresSheetError(msg)
        row["_line"] = int(where.rsplit(" ", 1)[-1])
        exposures[row["id"]] = row
    return exposures


def _read_sheet(
    path: str | Path, schema: Mapping[str, Any], kind: str, id_column: str, error: type[Exception]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, row)`` for every valid data row of a TSV sheet (``where`` names the line)."""
    path = Path(path)
    if not path.is_file():
        msg = f"{kind} sheet {path} does not exist"
        raise error(msg)
    with path.open(newline="", encoding="utf-8") as handle:
        lines = [
            (number, line)
            for number, line in enumerate(handle, start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    required = list(schema.get("required", []))
    if not lines:
        msg = f"{kind} sheet {path} is empty (a header line {'<TAB>'.join(required)!r} is required)"
        raise error(msg)
    reader = csv.reader([line for _, line in lines], delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = list(reader)
    header = [cell.strip() for cell in rows[0]]
    known = set(schema.get("properties", {}))
    missing = [col for col in required if col not in header]
    if missing:
        msg = (f"{kind} sheet {path} line {lines[0][0]}: missing column(s) {missing}; "
               f"header is {header}")
        raise error(msg)
    unknown = [col for col in header if col not in known]
    if unknown:
        msg = (f"{kind} sheet {path} line {lines[0][0]}: unknown column(s) {unknown}; "
               f"allowed: {sorted(known)}")
        raise error(msg)
    if len(set(header)) != len(header):
        msg = f"{kind} sheet {path} line {lines[0][0]}: duplicate column names in {header}"
        raise error(msg)

    validator = jsonschema.Draft202012Validator(schema)
    first_line: dict[str, int] = {}
    for (number, _), cells in zip(lines[1:], rows[1:], strict=True):
        where = f"{kind} sheet {path} line {number}"
        if len(cells) != len(header):
            msg = f"{where}: {len(cells)} cells but the header has {len(header)} columns"
            raise error(msg)
        try:
            row = _parse_row(dict(zip(header, (c.strip() for c in cells), strict=True)), where)
        except PairsSheetError as exc:
            raise error(str(exc)) from None
        errors = sorted(validator.iter_errors(row), key=lambda e: list(e.path))
        if errors:
            err = errors[0]
            column = ".".join(str(p) for p in err.path) or "(row)"
            msg = f"{where}, column {column!r}: {err.message}"
            raise error(msg)
        ident = row[id_column]
        if ident in first_line:
            label = "pair id" if id_column == "pair" else f"{kind[:-1]} {id_column}"
            msg = f"{where}: duplicate {label} {ident!r} (first used on line {first_line[ident]})"
            raise error(msg)
        first_line[ident] = number
        yield where, row


def _parse_row(cells: dict[str, str], where: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column, value in cells.items():
        if value == "":
            continue
        if column.endswith(_HDU_SUFFIX):
            row[column] = int(value) if value.isdigit() else value
        elif column.endswith(_NUMERIC_SUFFIXES):
            try:
                row[column] = float(value)
            except ValueError:
                msg = f"{where}, column {column!r}: expected a number, got {value!r}"
                raise PairsSheetError(msg) from None
        else:
            row[column] = value
    return row


def _check_files(
    row: Mapping[str, Any], where: str, produced: set[str], base: Path
) -> dict[str, str]:
    """``{column: message}`` for input files that neither exist nor are produced."""
    missing: dict[str, str] = {}
    for role in ROLES:
        for suffix in _PATH_SUFFIXES:
            column = role + suffix
            if column not in row:
                continue
            value = row[column]
            if str(Path(value)) in produced:
                continue
            if not (base / value).is_file():
                missing[column] = f"{where}, column {column!r}: file {value!r} does not exist"
        given = [s for s in ("_variance", "_weight", "_error") if role + s in row]
        if len(given) > 1:
            msg = f"{where}: give at most one of {[role + s for s in given]}"
            raise PairsSheetError(msg)
    return missing
