"""Small helpers shared by test modules (pytest puts tests/ on sys.path through conftest)."""

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mini_web_download_config(
    world: dict,
    inputs: str,
    out: str,
    *,
    image_size: int = 256,
    timeout_s: float = 2.0,
):
    """The download stage's config for a served mini web (`world` is its world.json): the world's
    robots agent token and loopback network, connect and read timeouts of `timeout_s` (the whole
    exchange 4x that), two retries, 16 threads, keep-ratio resize to `image_size`, 200 samples
    a shard."""
    from curation.download.fetcher import FetchConfig
    from curation.download.http_exchange import Timeouts
    from curation.download.imaging import ImageOptions
    from curation.stages.download import DownloadConfig

    return DownloadConfig(
        out=out,
        inputs=(inputs,),
        fetch=FetchConfig(
            user_agent_token=world["robots"]["agent_token"],
            allow_networks=(world["allowed_cidr"],),
            timeouts=Timeouts(connect_s=timeout_s, read_s=timeout_s, total_s=4 * timeout_s),
            retries=2,
        ),
        image=ImageOptions(image_size, "keep_ratio_largest"),
        threads=16,
        samples_per_shard=200,
    )
