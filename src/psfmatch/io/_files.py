"""File helpers of :mod:`psfmatch.io` that need no FITS library.

Every writer of the package goes through :func:`atomic_output`: the data go to a hidden
temporary file in the destination folder, which is then renamed onto the final name,
so a killed job never leaves a complete-looking product. :func:`link_product` and
:func:`copy_product` put an unchanged product in place the same way.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_output", "copy_product", "jsonable", "link_product"]


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name ends with the final name, so suffix-driven behaviour (``.gz``)
    is unchanged. On any exception the temporary file is removed; a temporary file of
    the same product left by a killed writer is removed first. A regular file is
    flushed to disk (``fsync``) before the rename; a symbolic link is renamed as is.
    """
    final = Path(path)
    # A writer killed earlier (SIGKILL, node failure) leaves its temporary file; the
    # next write of the same product removes it (one writer per product in a DAG).
    for stale in final.parent.glob(f".tmp-{'[0-9a-f]' * 12}-{glob.escape(final.name)}"):
        stale.unlink(missing_ok=True)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{final.name}")
    try:
        yield tmp
        if not tmp.is_symlink():
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def link_product(path: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Make ``path`` a relative symbolic link to the product ``target`` (atomic).

    For a product that is another product unchanged (the warp of a template already on
    the science grid): no byte is written or read. A relative link keeps working when
    the whole results folder moves. Snakemake touches a symbolic link itself, never its
    target, so the target's modification time (and what Snakemake decides from it)
    stays as it was; a hard link would share the target's time stamp.
    """
    final = Path(path)
    relative = os.path.relpath(Path(target).resolve(), final.parent.resolve())
    with atomic_output(final) as tmp:
        os.symlink(relative, tmp)
    return final


def copy_product(path: str | os.PathLike[str], source: str | os.PathLike[str]) -> Path:
    """Copy ``source`` to ``path`` byte for byte (atomic; the kernel copies, no user buffer)."""
    with atomic_output(path) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)


def jsonable(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays, paths, tuples and sets into JSON types."""
    import numpy as np

    if isinstance(obj, Mapping):
        keys = [k.item() if isinstance(k, np.generic) else k for k in obj]
        return {k: jsonable(v) for k, v in zip(keys, obj.values(), strict=True)}
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj) if isinstance(obj, set | frozenset) else obj
        return [jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj
