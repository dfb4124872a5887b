import io

import pytest
from PIL import Image
from planted_web import PlantedWeb


def jpeg_bytes(width: int = 64, height: int = 48, colour=(200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def small_jpeg() -> bytes:
    return jpeg_bytes()


@pytest.fixture
def web():
    with PlantedWeb("127.0.0.1") as server:
        yield server
