"""Parquet tables (candidate tables, cell tables, catalogues) with units and metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from psfmatch.errors import InputFileError
from psfmatch.io._files import atomic_output, jsonable

__all__ = ["TableData", "read_table", "write_table"]


class TableData(NamedTuple):
    """What :func:`read_table` returns (unpacks as ``columns, units, metadata``)."""

    columns: dict[str, np.ndarray]
    units: dict[str, str]
    metadata: dict[str, Any]


# ---------------------------------------------------------------------- tables
def write_table(
    path: str | os.PathLike[str],
    columns: Mapping[str, np.ndarray] | Any,
    *,
    units: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write columns to Parquet atomically, with per-column units and JSON metadata.

    Parameters
    ----------
    path : path-like
        Destination ``.parquet`` file.
    columns : mapping of str to 1-D array, or pyarrow.Table
        Equal-length columns.
    units : mapping of str to str, optional
        Column name -> unit string, stored as field metadata ``unit``.
    metadata : mapping, optional
        JSON-serialisable (numpy allowed) document, e.g. the producing step and its
        config, stored under schema metadata key ``psfmatch``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(columns, pa.Table):
        table = columns
    else:
        arrays = {str(k): np.asarray(v) for k, v in columns.items()}
        lengths = {k: v.shape for k, v in arrays.items()}
        if any(len(s) != 1 for s in lengths.values()) or len({s[0] for s in lengths.values()}) > 1:
            msg = f"table {path}: columns must be 1-D and of equal length, got {lengths}"
            raise ValueError(msg)
        table = pa.table(arrays)
    units = dict(units or {})
    unknown = sorted(set(units) - set(table.column_names))
    if unknown:
        raise ValueError(f"table {path}: units given for unknown columns {unknown}")
    fields = [
        field.with_metadata({**(field.metadata or {}), b"unit": str(units[field.name])})
        if field.name in units else field
        for field in table.schema
    ]
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"psfmatch"] = json.dumps(jsonable(dict(metadata or {})), sort_keys=True)
    table = table.cast(pa.schema(fields, metadata=schema_meta))
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_table(path: str | os.PathLike[str]) -> TableData:
    """Read a Parquet table written by :func:`write_table`.

    Returns
    -------
    TableData
        ``(columns, units, metadata)``: name -> numpy array, name -> unit (only columns
        that have one), and the decoded ``psfmatch`` metadata (``{}`` if absent).

    Raises
    ------
    InputFileError
        Missing or unreadable file.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise InputFileError(f"table {path} cannot be read as Parquet ({exc})") from exc
    columns = {name: table.column(name).to_numpy() for name in table.column_names}
    units = {
        f.name: f.metadata[b"unit"].decode()
        for f in table.schema if f.metadata and b"unit" in f.metadata
    }
    raw = (table.schema.metadata or {}).get(b"psfmatch")
    return TableData(columns, units, json.loads(raw) if raw else {})

