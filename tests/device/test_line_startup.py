"""The sorting line's start-up latency check against a link that loses heartbeats (a starved host)."""

from types import SimpleNamespace

import pytest

from device.sorting.line import SortingLine
from firmware_bridge.link import BridgeTimeout


class LossyLink:
    """ping() answers from a script: a number is a round trip in seconds, None a heartbeat never answered."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def ping(self) -> float:
        self.calls += 1
        rtt = self.script.pop(0)
        if rtt is None:
            raise BridgeTimeout("the MCU did not acknowledge HEARTBEAT (seq 9) in 4 tries of 50 ms")
        return rtt


def slowest(link: LossyLink) -> float:
    return SortingLine._slowest_round_trip_ms(SimpleNamespace(link=link))  # type: ignore[arg-type]


def test_lost_heartbeats_are_tried_again_and_the_slowest_answer_counts():
    link = LossyLink([0.002, None, 0.004, None, 0.003, 0.001, 0.002, 0.009])
    assert slowest(link) == pytest.approx(4.0)  # five answers: 2, 4, 3, 1, 2 ms; the 9 ms one is never asked
    assert link.calls == 7


def test_a_link_that_loses_most_heartbeats_is_refused_with_the_reason():
    link = LossyLink([None, 0.002, None, None, None, None, 0.003, None, None, None])
    with pytest.raises(BridgeTimeout, match="answered 2 of 10 heartbeats at start-up"):
        slowest(link)
