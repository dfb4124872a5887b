"""The demo's step runner: an arm that trains beside the other steps (Steps.start / finish)."""

from __future__ import annotations

import sys
import time

import pytest

from curation.demo import Steps

PY = sys.executable


def test_an_arm_beside_the_steps_runs_its_commands_in_order_into_its_log(tmp_path):
    steps = Steps()
    log = tmp_path / "logs" / "arm.log"
    beside = steps.start(
        "arm",
        [
            [PY, "-c", "import time; time.sleep(0.5); print('trained')"],
            [PY, "-c", "print('evaluated')"],
        ],
        log,
    )
    steps.run("foreground", [PY, "-c", "import time; time.sleep(0.5)"])
    steps.finish(beside)
    assert log.read_text().split() == ["trained", "evaluated"]
    names = [name for name, _ in steps.rows]
    assert names == ["foreground", "arm"]
    # The two ran at once: the wall clock counts the arm once, not on top of the foreground step.
    assert steps.wall() < sum(seconds for _, seconds in steps.rows)
    assert "total (wall clock)" in steps.table()


def test_a_failing_arm_stops_the_demo_naming_its_command_and_log_and_skips_the_rest(tmp_path):
    steps = Steps()
    log = tmp_path / "arm.log"
    marker = tmp_path / "evaluated"
    beside = steps.start(
        "arm",
        [
            [PY, "-c", "import sys; print('boom'); sys.exit(3)"],
            [PY, "-c", f"open({str(marker)!r}, 'w')"],
        ],
        log,
    )
    with pytest.raises(SystemExit, match=r"demo step 'arm' failed .*exited 3.*arm\.log"):
        steps.finish(beside)
    assert "boom" in log.read_text() and not marker.exists()


def test_stopping_an_arm_terminates_its_command_and_starts_no_other(tmp_path):
    steps = Steps()
    marker = tmp_path / "second"
    beside = steps.start(
        "arm",
        [[PY, "-c", "import time; time.sleep(60)"], [PY, "-c", f"open({str(marker)!r}, 'w')"]],
        tmp_path / "arm.log",
    )
    while beside.process is None:
        time.sleep(0.05)
    started = time.perf_counter()
    beside.stop()
    assert time.perf_counter() - started < 10
    assert beside.process.poll() is not None and not marker.exists()
    assert not beside.thread.is_alive()
