"""A main loop that uses device.service exactly as `edgesort run` must, for the signal tests.

Frames and MCU heartbeats are counted, not produced: what is under test is the lifecycle (READY, WATCHDOG only
from this loop, the SIGUSR2 freeze, STOPPING and the exit code), in a real process with real signals.
Usage: python service_loop.py [--fail-after N]   (N iterations, then an OSError as if the MCU link broke)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from device.service import (
    STATUS_MCU_SAFE,
    ExitCode,
    Notifier,
    ProgressWatchdog,
    ServiceSignals,
    exit_code_for,
)

LOOP_PERIOD_S = 0.05  # stands in for waiting on the next pipeline result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-after", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    notifier = Notifier.from_env()
    with ServiceSignals(notifier) as sig:
        try:
            notifier.status("starting")
            notifier.ready("sorting")
            watchdog = ProgressWatchdog(notifier)
            seq = 0
            while not sig.stop.is_set():
                time.sleep(LOOP_PERIOD_S)
                seq += 1
                if args.fail_after and seq >= args.fail_after:
                    raise OSError(5, "MCU link lost")
                watchdog.tick(seq, time.monotonic())
            code = ExitCode.OK
        except Exception as exc:
            logging.getLogger("edgesort.run").error("stopping: %s", exc)
            code = exit_code_for(exc)
        finally:
            notifier.stopping()
            notifier.status(STATUS_MCU_SAFE)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
