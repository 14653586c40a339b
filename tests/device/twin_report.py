"""Reading a twin session's report in the clock-jump scenario tests."""

from __future__ import annotations

from typing import Any

# decisions whose items the line sends to the default bin by design, whatever the clock did: an ejection the
# MCU called late or full, or could not be sent, and a decision made while the line stood down
DEFAULT_BY_DESIGN = ("late", "full", "failed", "clock_unstable")


def items_lost(report: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    """(items that missed the bin their decision named for no designed reason, how many a run may lose).

    The allowance is 3% of the items plus the ejections withdrawn and never queued again. A stand-down (a burst
    of jumps, one of them not located) withdraws ejections queued before it, and their items keep the outcome
    "queued"; an unlocated jump's ejection is not queued again with a neighbour in the pusher's sweep. Both send
    the item to the default bin by design (a CI run at up to 75% steal lost 4 of 87 items after a stand-down)."""
    lost = [it for it in report["per_item"]
            if it["bin"] != it["decided_bin"] and it.get("outcome") not in DEFAULT_BY_DESIGN]
    ej = report["ejections"]
    return lost, 0.03 * report["items_total"] + ej["withdrawn"] - ej["requeued"]
