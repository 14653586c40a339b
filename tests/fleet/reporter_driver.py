"""Test driver: a FleetReporter in its own process that emits item events at a fixed rate.

Prints `seq N` after each item_event() returns (that seq is then on disk), `idle` once the broker has
acknowledged everything, and exits after a clean stop(). Tests kill it with SIGKILL part-way and run it again.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from device.config import DeviceConfig
from device.fleet.reporter import FleetReporter


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--state", required=True)
    p.add_argument("--broker", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=100.0, help="events per second")
    p.add_argument("--device", default="driver-0")
    args = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="driver %(levelname)s %(name)s: %(message)s"
    )
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": args.device, "site": "test"},
            "mqtt": {"url": args.broker, "telemetry_period_s": 60},
            "paths": {"state_dir": args.state},
        }
    )
    rep = FleetReporter(cfg, versions={"driver": "1"}, telemetry=dict)
    rep.start()
    period = 1.0 / args.rate
    next_t = time.monotonic()
    for i in range(args.count):
        seq = rep.item_event({"item": i, "grade": "M", "confidence": 0.9, "outcome": "queued"})
        print(f"seq {seq}", flush=True)
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))  # paces the emitter at --rate
    if rep.wait_idle(60):
        print("idle", flush=True)
    rep.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
