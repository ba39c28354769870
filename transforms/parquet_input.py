"""Documents of Parquet files: the values of the text column, read a row group at a time.

A range of a file reads the row groups that start in it, as Beam's own
Parquet source splits, so the ranges of a file read each row group once.
"""

import math
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


def row_group_offsets(metadata: pq.FileMetaData) -> list[int]:
    """The byte where each row group starts: its first column chunk's first page (dictionary or data)."""
    offsets = []
    for i in range(metadata.num_row_groups):
        column = metadata.row_group(i).column(0)
        pages = [column.data_page_offset]
        if column.has_dictionary_page and column.dictionary_page_offset:
            pages.append(column.dictionary_page_offset)
        offsets.append(min(pages))
    return offsets


def parquet_values(
    handle, text_field: str, drop: Callable[..., None], start: int = 0, stop: int | None = None
) -> Iterator[str]:
    """The text values of the row groups that start in [start, stop); a value that is not text is dropped."""
    try:
        parquet = pq.ParquetFile(handle)
    except pa.ArrowException as e:
        if start and not isinstance(e, OSError):
            return  # a damaged footer: every range finds it, the first one counts it
        raise
    row_groups = [
        i
        for i, offset in enumerate(row_group_offsets(parquet.metadata))
        if start <= offset < (stop or math.inf)
    ]
    if text_field not in parquet.schema_arrow.names:
        drop("no_text_field", sum(parquet.metadata.row_group(i).num_rows for i in row_groups))
        return
    if not row_groups:
        return
    for batch in parquet.iter_batches(batch_size=1024, row_groups=row_groups, columns=[text_field]):
        values = batch.column(0).to_pylist()
        texts = [v for v in values if isinstance(v, str)]
        if len(texts) < len(values):
            drop("no_text_field", len(values) - len(texts))
        yield from texts
