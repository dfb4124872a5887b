"""Recognise image formats by their first bytes; servers' Content-Type headers often lie."""

from __future__ import annotations

SNIFF_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
ISO_MEDIA_IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1")


def sniff_image_format(head: bytes) -> str | None:
    """The image format that `head` (the first >= 32 bytes of a body) starts, or None."""
    for prefix, name in SNIFF_PREFIXES:
        if head.startswith(prefix):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in ISO_MEDIA_IMAGE_BRANDS:
        return "avif" if head[8:12] in (b"avif", b"avis") else "heif"
    return None
