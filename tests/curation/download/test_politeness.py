import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from curation.download.politeness import HostGate, HostLimits


def starts_through(gate: HostGate, host: str, requests: int, hold_s: float, crawl_delay_s=0.0):
    """Request start times and the peak number held at once, from 8 threads."""
    starts: list[float] = []
    active = peak = 0
    lock = threading.Lock()

    def one(_):
        nonlocal active, peak
        with gate.hold(host, crawl_delay_s):
            with lock:
                starts.append(time.monotonic())
                active += 1
                peak = max(peak, active)
            time.sleep(hold_s)
            with lock:
                active -= 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(requests)))
    return sorted(starts), peak


def test_connections_are_capped_per_host_and_shared_by_sub_partitions():
    gate = HostGate(HostLimits(connections=4), parts={"cdn": 2, "tiny": 8})
    assert gate.connections_for("site") == 4
    assert gate.connections_for("cdn") == 2
    assert gate.connections_for("tiny") == 1  # never below one
    _, peak = starts_through(gate, "cdn", 8, hold_s=0.05)
    assert peak == 2


@pytest.mark.parametrize(
    "limits, parts, crawl_delay_s, interval",
    [
        (HostLimits(requests_per_s=10), 1, 0.0, 0.1),
        (HostLimits(requests_per_s=10), 2, 0.0, 0.2),  # half the rate for half the host
        (HostLimits(requests_per_s=10), 1, 0.15, 0.15),  # Crawl-delay wins when it is longer
        (HostLimits(), 1, 0.12, 0.12),
    ],
)
def test_request_starts_are_spaced_by_the_host_interval(limits, parts, crawl_delay_s, interval):
    gate = HostGate(limits, parts={"h": parts})
    assert gate.interval_s("h", crawl_delay_s) == pytest.approx(interval)
    starts, _ = starts_through(gate, "h", 5, hold_s=0.0, crawl_delay_s=crawl_delay_s)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert min(gaps) >= interval - 0.03, gaps


def test_no_limit_means_no_waiting_and_bad_limits_are_refused():
    starts, _ = starts_through(HostGate(HostLimits()), "h", 8, hold_s=0.0)
    assert starts[-1] - starts[0] < 0.1
    with pytest.raises(ValueError):
        HostLimits(connections=0)
    with pytest.raises(ValueError):
        HostLimits(requests_per_s=-1)
