"""Images straight out of the pool's WebDataset tars, by (shard, key).

The first request for a shard walks its tar headers once (tarfile seeks over the member data, so
on s3:// this reads headers, not images) and keeps {sample key: {extension: (data offset, size)}},
keys and extensions split by webdataset's rule (training.data.tars); later requests read just
that byte range. Indexes of the most recently used shards stay in memory.
"""

from __future__ import annotations

import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable

from curation import fsio
from training.data.tars import split_member_name

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
}
CACHED_SHARDS = 64
TarIndex = dict[str, dict[str, tuple[int, int]]]  # {key: {extension: (data offset, size)}}


class TarImages:
    def __init__(self, tar_url_for_shard: Callable[[str], str], cached_shards: int = CACHED_SHARDS):
        self._tar_url = tar_url_for_shard
        self._indexes: OrderedDict[str, TarIndex] = OrderedDict()
        self._capacity = cached_shards
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    def index(self, shard: str) -> TarIndex:
        with self._lock:
            if shard in self._indexes:
                self._indexes.move_to_end(shard)
                return self._indexes[shard]
            # A page asks for many images of one shard at once: let one request walk the tar.
            building = self._building.setdefault(shard, threading.Lock())
        with building:
            with self._lock:
                if shard in self._indexes:
                    return self._indexes[shard]
            built = build_tar_index(self._tar_url(shard))
            with self._lock:
                self._indexes[shard] = built
                self._building.pop(shard, None)
                while len(self._indexes) > self._capacity:
                    self._indexes.popitem(last=False)
        return built

    def image(self, shard: str, key: str) -> tuple[bytes, str]:
        """The image bytes of sample `key` in pool shard `shard`, and its content type."""
        if not shard.isdigit():
            raise KeyError(f"bad shard id {shard!r}")
        url = self._tar_url(shard)
        if not fsio.exists(url):
            raise KeyError(f"no tar for shard {shard} at {url}")
        files = self.index(shard).get(key, {})
        for extension in IMAGE_EXTENSIONS:
            member = files.get(extension)
            if member is not None:
                offset, size = member
                fs, path = fsio.filesystem(url)
                with fs.open(path, "rb") as handle:
                    handle.seek(offset)
                    return handle.read(size), CONTENT_TYPES[extension]
        raise KeyError(f"no image for key {key!r} in {url}")


def build_tar_index(url: str) -> TarIndex:
    """{key: {extension: (offset of its data, size)}} for every regular file in the tar at `url`."""
    fs, path = fsio.filesystem(url)
    index: TarIndex = {}
    with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
        for member in tar:
            if member.isfile():
                key, extension = split_member_name(member.name)
                index.setdefault(key, {})[extension] = (member.offset_data, member.size)
    return index
