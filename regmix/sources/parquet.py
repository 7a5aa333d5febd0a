"""The parquet kind: per-domain globs of Parquet files with a text column (a dotted path
into structs); a validation-only set is one glob."""

from __future__ import annotations

from collections.abc import Iterator

from regmix.sources.base import (
    ARROW_BATCH_ROWS,
    UNREADABLE,
    CorruptFileError,
    GlobbedKind,
    Record,
    Spec,
    arrow_column,
    checked_text,
)


def parquet_records(files: list[str], text_column: str) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise CorruptFileError(path, f"not a readable Parquet file ({err})") from None
        root = text_column.split(".")[0]
        if root not in parquet.schema_arrow.names:
            yield UNREADABLE, f"{path}: no column {text_column!r} (columns: {parquet.schema_arrow.names})"
            continue
        row = 0
        for batch in parquet.iter_batches(columns=[root], batch_size=ARROW_BATCH_ROWS):
            texts = arrow_column(pa.Table.from_batches([batch]), text_column).to_pylist()
            for offset, text in enumerate(texts):
                yield checked_text(text, f"{path} row {row + offset}")
            row += len(texts)


class Parquet(GlobbedKind):
    name = "parquet"
    keys = frozenset({"files", "text_column"})
    validation_keys = frozenset({"files", "text_column"})

    def read(self, files: list[str], spec: Spec) -> Iterator[Record]:
        return parquet_records(files, spec["text_column"])


KIND = Parquet()
