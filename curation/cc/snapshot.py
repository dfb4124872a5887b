"""Which files make up a Common Crawl snapshot.

Each snapshot lists its files in `crawl-data/SNAPSHOT/{warc,wat}.paths.gz`: one path per line,
relative to the bucket root (`crawl-data/SNAPSHOT/segments/.../warc/...warc.gz`). The root is any
fsspec URL: the public bucket (`s3://commoncrawl/`, read anonymously), its HTTPS mirror, the mini
Common Crawl on localhost, or a local copy.
"""

from __future__ import annotations

import gzip
import re

from curation import fsio
from curation.cc.warc_reader import PUBLIC_CC_BUCKET, open_archive

FORMATS = ("warc", "wat")
_SNAPSHOT_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def paths_listing_url(cc_root: str, snapshot: str, file_format: str) -> str:
    if file_format not in FORMATS:
        raise ValueError(f"unknown file format {file_format!r}; expected one of {FORMATS}")
    if not _SNAPSHOT_ID.match(snapshot):
        raise ValueError(f"snapshot id {snapshot!r} is not of the form CC-MAIN-2024-10")
    return fsio.join(cc_root, "crawl-data", snapshot, f"{file_format}.paths.gz")


def list_snapshot_files(
    cc_root: str = PUBLIC_CC_BUCKET,
    snapshot: str = "",
    file_format: str = "warc",
    max_files: int | None = None,
) -> list[str]:
    """Full URLs of the snapshot's files, in the listing's order (first `max_files` if given)."""
    listing = paths_listing_url(cc_root, snapshot, file_format)
    try:
        with open_archive(listing) as handle:
            text = gzip.decompress(handle.read()).decode("utf-8")
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"snapshot listing {listing} does not exist "
            f"(is --snapshot {snapshot} right for --cc-root {cc_root}?)"
        ) from exc
    paths = [line.strip() for line in text.splitlines() if line.strip()]
    if max_files is not None:
        paths = paths[:max_files]
    return [fsio.join(cc_root, path) for path in paths]
