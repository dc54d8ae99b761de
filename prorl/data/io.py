"""Writing verl-schema rows: parquet (by ``.parquet`` extension, via pyarrow) or JSONL.

Read them back with :func:`prorl.data.dataset.read_rows`."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_rows(rows: list[dict], path: str | os.PathLike) -> None:
    """Write ``rows`` to ``path`` (parquet if it ends in ``.parquet``, else JSONL), creating parents.

    The file is written beside the target and renamed into place, so readers never see half a file.
    In parquet, empty dicts (e.g. ``extra_info={}``) become nulls: parquet has no field-less struct.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            if not rows:
                raise ValueError(f"refusing to write an empty parquet file {path} (no schema)")
            try:
                table = pa.Table.from_pylist([_no_empty_structs(r) for r in rows])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise ValueError(f"rows do not fit one parquet schema ({e}); write .jsonl instead") from e
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _no_empty_structs(obj: object) -> object:
    """Parquet cannot store a struct without fields, so empty dicts are written as nulls."""
    if isinstance(obj, dict):
        return {k: _no_empty_structs(v) for k, v in obj.items()} if obj else None
    if isinstance(obj, list):
        return [_no_empty_structs(v) for v in obj]
    return obj
