"""Measurements of the machine under a benchmark, recorded beside its figures so that a slow run can be read.

`CpuShares`: the machine's CPU time split over a run, steal included (a shared VM's slow run is explained by it
better than by load).

A pipeline hands every frame from thread to thread (capture, prepare, infer, finish, consumer): a handful of
wake-ups per frame. What one wake-up costs is a property of the machine, not of the pipeline: a few
microseconds on bare metal, far more on a VM whose idle virtual CPUs the hypervisor must schedule again before
they run. With a model that infers in half a millisecond, that difference decides the pipeline's efficiency, so
the pipeline benchmark measures it in the same run (`thread_handoff_us`) and counts the context switches each
frame costs (`context_switches`).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np


def thread_handoff_us(handoffs: int = 2000) -> dict[str, float]:
    """One thread waking another that then wakes it back (a `threading.Event` ping-pong), per hand-off in
    microseconds: p50 and p99 of half of each round trip. The pipeline's queues wake their stages the same way
    (a condition variable over a lock)."""
    ping, pong = threading.Event(), threading.Event()
    rounds = max(1, handoffs // 2)

    def echo() -> None:
        for _ in range(rounds):
            ping.wait()
            ping.clear()
            pong.set()

    t = threading.Thread(target=echo, name="handoff-echo", daemon=True)
    t.start()
    lat = np.empty(rounds)
    for i in range(rounds):
        t0 = time.perf_counter()
        ping.set()
        pong.wait()
        pong.clear()
        lat[i] = time.perf_counter() - t0
    t.join()
    half_us = lat * 1e6 / 2
    return {"p50": round(float(np.percentile(half_us, 50)), 1), "p99": round(float(np.percentile(half_us, 99)), 1)}


def context_switches() -> int:
    """Context switches (voluntary and not) of every live thread of this process so far; 0 where /proc is
    absent. Take the difference over a span in which the threads of interest stay alive (an exited thread's
    count leaves the sum)."""
    total = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches:" in line:  # voluntary_ctxt_switches, nonvoluntary_ctxt_switches
                        total += int(line.split(":", 1)[1])
        except (OSError, ValueError):
            continue  # the thread ended between the listing and the read
    return total


class CpuShares:
    """The machine's CPU time split over a run, from /proc/stat (Linux; empty elsewhere). `steal` is the time the
    hypervisor gave our virtual CPUs to someone else: on a shared VM it explains a slow run better than load."""

    FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

    def __init__(self) -> None:
        self._start = self._read()

    @classmethod
    def _read(cls) -> list[int]:
        try:
            with open("/proc/stat") as f:
                return [int(x) for x in f.readline().split()[1 : 1 + len(cls.FIELDS)]]
        except (OSError, ValueError):
            return []

    def percent(self) -> dict[str, float]:
        end = self._read()
        if len(end) != len(self.FIELDS) or len(self._start) != len(self.FIELDS):
            return {}
        delta = [b - a for a, b in zip(self._start, end, strict=True)]
        total = sum(delta) or 1
        return {k: round(100.0 * d / total, 1) for k, d in zip(self.FIELDS, delta, strict=True)}
