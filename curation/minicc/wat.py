"""WAT records: Common Crawl's JSON metadata envelope for each WARC record.

The envelope follows CC's WAT layout (Container, Envelope → WARC-Header-Metadata, Payload-Metadata
→ HTTP-Response-Metadata → HTML-Metadata → Head{Title, Base, Metas}, Links). Numbers are strings,
as in CC's files.

Image links: every URL-carrying attribute of an <img> becomes one `Links` entry whose path names
the attribute: "IMG@/src", "IMG@/srcset" (the raw srcset value, unsplit), "IMG@/data-src",
"IMG@/data-lazy-src", "IMG@/data-original". `url` is the raw attribute value (not resolved),
and `alt` / `title` are present when the tag has that attribute (possibly empty). CC's own WAT
extractor reports IMG@/src; the extra attribute paths are our choice, documented in world.json,
so that a WAT-based extractor can recover lazy-loaded and srcset images if it wants to.
"""

from __future__ import annotations

import json
from typing import Any

from curation.minicc.pages import Page
from curation.minicc.urlforms import LAZY_ATTRIBUTES
from curation.minicc.warc import WrittenRecord, sha1_digest

IMG_LINK_ATTRIBUTES: tuple[str, ...] = ("src", "srcset", *LAZY_ATTRIBUTES)


def _envelope(warc_filename: str, record: WrittenRecord, payload: dict[str, Any]) -> dict:
    inflated = record.header_length + len(record.block) + 4
    return {
        "Container": {
            "Filename": warc_filename,
            "Compressed": True,
            "Offset": str(record.offset),
            "Gzip-Metadata": {
                "Deflate-Length": str(record.length - 18),
                "Header-Length": "10",
                "Footer-Length": "8",
                "Inflated-Length": str(inflated),
            },
        },
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Length": str(record.header_length),
            "Block-Digest": sha1_digest(record.block),
            "Actual-Content-Length": str(len(record.block)),
            "WARC-Header-Metadata": dict(record.headers),
            "Payload-Metadata": payload,
        },
    }


def _parse_http_head(head: bytes) -> tuple[list[str], dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ": " in line:
            name, value = line.split(": ", 1)
            headers[name] = value
    return lines[0].split(" ", 2), headers


def html_metadata(page: Page) -> dict[str, Any]:
    metas = [
        {"name": "description", "content": page.filler[0]},
        {"property": "og:title", "content": page.title},
    ]
    head: dict[str, Any] = {"Title": page.title, "Metas": metas}
    if page.base_href:
        head["Base"] = page.base_href
    links: list[dict[str, str]] = [
        {"path": "A@/href", "url": link, "text": f"{page.title} {i}"}
        for i, link in enumerate(page.links)
    ]
    for tag in page.tags:
        attrs = dict(tag.attrs)
        for attribute in IMG_LINK_ATTRIBUTES:
            if attrs.get(attribute) is None:
                continue
            entry = {"path": f"IMG@/{attribute}", "url": attrs[attribute]}
            for text_attribute in ("alt", "title"):
                if attrs.get(text_attribute) is not None:
                    entry[text_attribute] = attrs[text_attribute]
            links.append(entry)
    return {"Head": head, "Links": links}


def request_metadata(record: WrittenRecord) -> dict[str, Any]:
    head = record.block.split(b"\r\n\r\n", 1)[0]
    (method, path, version), headers = _parse_http_head(head)
    return {
        "Actual-Content-Type": "application/http; msgtype=request",
        "HTTP-Request-Metadata": {
            "Request-Message": {"Method": method, "Path": path, "Version": version},
            "Headers-Length": str(len(head) + 4),
            "Headers": headers,
            "Entity-Length": "0",
            "Entity-Trailing-Slop-Length": "0",
        },
    }


def response_metadata(record: WrittenRecord, page: Page, parseable: bool) -> dict[str, Any]:
    if not parseable:  # what a WAT generator can say about a response it could not parse
        return {
            "Actual-Content-Type": "application/http; msgtype=response",
            "Trailing-Slop-Length": "0",
        }
    head, body = record.block.split(b"\r\n\r\n", 1)
    (version, status, reason), headers = _parse_http_head(head)
    return {
        "Actual-Content-Type": "application/http; msgtype=response",
        "HTTP-Response-Metadata": {
            "Response-Message": {"Version": version, "Status": status, "Reason": reason},
            "Headers-Length": str(len(head) + 4),
            "Headers": headers,
            "Entity-Length": str(len(body)),
            "Entity-Digest": sha1_digest(body),
            "Entity-Trailing-Slop-Length": "0",
            "HTML-Metadata": html_metadata(page),
        },
    }


def fields_metadata(record: WrittenRecord, key: str) -> dict[str, Any]:
    fields = {}
    for line in record.block.decode("utf-8").split("\r\n"):
        if ": " in line:
            name, value = line.split(": ", 1)
            fields[name] = value
    if key == "WARC-Info-Metadata":
        return {"Actual-Content-Type": "application/warc-fields", key: fields}
    return {
        "Actual-Content-Type": "application/warc-fields",
        key: {"Metadata-Records": [{"Name": k, "Value": v} for k, v in fields.items()]},
    }


def wat_record_block(warc_filename: str, record: WrittenRecord, payload: dict[str, Any]) -> bytes:
    return json.dumps(
        _envelope(warc_filename, record, payload), ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
