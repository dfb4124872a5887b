"""Published URL lists (LAION, DataComp, any Parquet) → rows of the candidates schema.

Each format names where the candidates columns come from and which of its own columns are worth
keeping beside them (their CLIP scores, face boxes for blurring, the original image's hash).
Ingested rows have no page: `page_url` is null, `warc_path` is the list file and `warc_offset` the
row's position in it, which gives dedup a stable first-seen order across sources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from curation import fsio
from curation.cc.candidates import CANDIDATE_SCHEMA, INT32_MAX, collapse_whitespace, pair_uid
from curation.cc.urls import UrlRejected, normalize

FACE_BOXES = pa.list_(pa.list_(pa.float32()))


@dataclass(frozen=True)
class UrlListFormat:
    """Where one published list keeps the candidate fields, and what else it carries."""

    name: str
    url: str
    text: str
    width: str | None = None
    height: str | None = None
    lang: str | None = None
    # Their column -> (our column, type); missing optional columns are filled with nulls.
    # A None type keeps the input column's own type (generic lists).
    extras: dict[str, tuple[str, pa.DataType | None]] = field(default_factory=dict)

    def input_columns(self) -> list[str]:
        named = [self.url, self.text, self.width, self.height, self.lang, *self.extras]
        return [column for column in named if column]


# LAION-400M parquet: SAMPLE_ID, URL, TEXT, HEIGHT, WIDTH, LICENSE, NSFW, similarity;
# LAION-5B adds hash, punsafe, pwatermark and (multi) LANGUAGE.
LAION = UrlListFormat(
    "laion",
    url="URL",
    text="TEXT",
    width="WIDTH",
    height="HEIGHT",
    lang="LANGUAGE",
    extras={
        "similarity": ("laion_clip_similarity", pa.float32()),
        "NSFW": ("laion_nsfw", pa.string()),
        "punsafe": ("laion_punsafe", pa.float32()),
        "pwatermark": ("laion_pwatermark", pa.float32()),
        "LICENSE": ("laion_license", pa.string()),
        "SAMPLE_ID": ("laion_sample_id", pa.int64()),
    },
)
# DataComp CommonPool metadata: uid, url, text, original_width, original_height,
# clip_b32_similarity_score, clip_l14_similarity_score, face_bboxes (normalised xyxy), sha256.
DATACOMP = UrlListFormat(
    "datacomp",
    url="url",
    text="text",
    width="original_width",
    height="original_height",
    extras={
        "uid": ("datacomp_uid", pa.string()),
        "clip_b32_similarity_score": ("clip_b32_similarity_score", pa.float32()),
        "clip_l14_similarity_score": ("clip_l14_similarity_score", pa.float32()),
        "face_bboxes": ("face_bboxes", FACE_BOXES),
        "sha256": ("source_sha256", pa.string()),
    },
)
FORMATS = {"laion": LAION, "datacomp": DATACOMP}


def generic_format(
    url: str = "url",
    text: str = "text",
    width: str | None = None,
    height: str | None = None,
    keep: tuple[str, ...] = (),
) -> UrlListFormat:
    """Any Parquet list: name its URL and text columns; `keep` columns are carried as they are."""
    return UrlListFormat(
        "parquet",
        url=url,
        text=text,
        width=width,
        height=height,
        extras={column: (column, None) for column in keep},
    )


def _dimension(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= INT32_MAX else None


def _required_columns(fmt: UrlListFormat, available: list[str], where: str) -> None:
    missing = [c for c in (fmt.url, fmt.text) if c not in available]
    if missing:
        raise ValueError(
            f"{where}: not a {fmt.name} URL list, missing column(s) {', '.join(missing)} "
            f"(has {', '.join(available[:12])})"
        )


def resolved_schema(fmt: UrlListFormat, input_schema: pa.Schema) -> pa.Schema:
    """The output schema; a generic list's kept columns take their input type."""
    schema = CANDIDATE_SCHEMA
    for theirs, (ours, kind) in fmt.extras.items():
        if kind is None:
            if theirs not in input_schema.names:
                raise ValueError(
                    f"--keep column {theirs!r} is not in the list (has {input_schema.names[:12]})"
                )
            kind = input_schema.field(theirs).type
        schema = schema.append(pa.field(ours, kind))
    return schema


def map_batch(
    batch: pa.RecordBatch,
    fmt: UrlListFormat,
    schema: pa.Schema,
    source: str,
    list_path: str,
    first_row: int,
    drops: Counter,
) -> pa.Table:
    """One input batch → candidate rows; rows without a usable URL or text are counted and dropped."""
    present = set(batch.schema.names)

    def column(name: str | None) -> list:
        return (
            batch.column(name).to_pylist() if name and name in present else [None] * batch.num_rows
        )

    urls, texts = column(fmt.url), column(fmt.text)
    widths, heights, langs = column(fmt.width), column(fmt.height), column(fmt.lang)
    out: dict[str, list] = {name: [] for name in CANDIDATE_SCHEMA.names}
    kept_rows: list[int] = []
    for row in range(batch.num_rows):
        raw_url, raw_text = urls[row], texts[row]
        text = collapse_whitespace(raw_text) if isinstance(raw_text, str) else ""
        if not text:
            drops["no_text"] += 1
            continue
        if not isinstance(raw_url, str):
            drops["url_invalid"] += 1
            continue
        try:
            url = normalize(raw_url.strip())
        except UrlRejected as rejected:
            drops[rejected.reason] += 1
            continue
        out["uid"].append(pair_uid(url, text))
        out["url"].append(url)
        out["text"].append(text)
        out["text_source"].append(fmt.name)
        out["page_url"].append(None)
        out["warc_path"].append(list_path)
        out["warc_offset"].append(first_row + row)
        out["width"].append(_dimension(widths[row]))
        out["height"].append(_dimension(heights[row]))
        out["lang"].append(langs[row] if isinstance(langs[row], str) and langs[row] else None)
        out["source"].append(source)
        kept_rows.append(row)
    table = pa.table(out, schema=CANDIDATE_SCHEMA)
    taken = pa.array(kept_rows, pa.int64())
    for theirs, (ours, _) in fmt.extras.items():
        kind = schema.field(ours).type
        if theirs not in present:
            table = table.append_column(pa.field(ours, kind), pa.nulls(table.num_rows, kind))
            continue
        try:
            values = batch.column(theirs).take(taken).cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"{list_path}: column {theirs!r} cannot be read as {kind}: {exc}"
            ) from None
        table = table.append_column(pa.field(ours, kind), values)
    return table


def iter_candidate_batches(
    list_url: str, fmt: UrlListFormat, source: str, drops: Counter, batch_rows: int = 65_536
) -> Iterator[pa.Table]:
    """Stream one URL-list Parquet file as candidate tables (bounded memory)."""
    fs, path = fsio.filesystem(list_url)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        _required_columns(fmt, names, list_url)
        schema = resolved_schema(fmt, parquet.schema_arrow)
        columns = [c for c in fmt.input_columns() if c in names]
        first_row = 0
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            yield map_batch(batch, fmt, schema, source, list_url, first_row, drops)
            first_row += batch.num_rows
