"""img2dataset's `exif` column: the tags of a JPEG, `{}` for formats exifread does not read, and no
log line per such image (a PNG pool would otherwise write one warning per row to every log)."""

import io
import json
import logging

from PIL import Image

from curation.download.shard_writer import exif_json


def encoded(fmt: str, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    image.save(out, fmt, **({"exif": exif} if exif is not None else {}))
    return out.getvalue()


def test_a_jpeg_with_exif_gives_its_tags():
    exif = Image.Exif()
    exif[0x010F] = "OpenVisionCam"  # Make
    tags = json.loads(exif_json(encoded("JPEG", exif)))
    assert tags["Image Make"] == "OpenVisionCam"


def test_a_png_gives_no_tags_and_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG):
        assert json.loads(exif_json(encoded("PNG"))) == {}
        assert json.loads(exif_json(encoded("GIF"))) == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_garbage_gives_null_or_no_tags():
    assert exif_json(b"\xff\xd8 not really a jpeg") in (None, "{}")
