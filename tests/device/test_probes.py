import sys
import threading

import pytest

from device.commands.probes import context_switches, thread_handoff_us


def test_a_handoff_is_timed_per_wake_up():
    h = thread_handoff_us(200)
    assert 0 < h["p50"] <= h["p99"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="context switch counts come from /proc (Linux)")
def test_context_switches_count_every_thread_of_the_process():
    go, stop = threading.Event(), threading.Event()

    def sleeper() -> None:  # a second thread that blocks again and again: each block is a voluntary switch
        go.set()
        while not stop.wait(0.001):
            pass

    t = threading.Thread(target=sleeper)
    t.start()
    go.wait()
    before = context_switches()
    threading.Event().wait(0.05)
    after = context_switches()
    stop.set()
    t.join()
    assert after - before >= 10  # the sleeper woke about 50 times; the main thread's own count is not enough
