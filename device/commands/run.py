"""`edgesort run --config FILE`: the sorting daemon (systemd's ExecStart; Type=notify).

    load config ─▶ open the line (bundle, backend, camera, MCU link, reporter, pipeline) ─▶ READY=1
    main loop every LOOP_PERIOD_S: WATCHDOG=1 only if a fresh frame and a fresh MCU heartbeat arrived,
                                   STATUS= line, link health
    SIGTERM ─▶ STOPPING=1 ─▶ pipeline stops ─▶ MCU safe state ─▶ `stopped` published ─▶ outbox closed
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("edgesort.run")

LOOP_PERIOD_S = 0.25  # main loop: watchdog and status; the work itself runs in the pipeline's threads
STATUS_PERIOD_S = 10.0
ENGINE_BUILD_ALLOWANCE_S = 1800.0  # EXTEND_TIMEOUT_USEC headroom while a TensorRT engine may be building


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the sorting daemon (what the systemd service starts)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="device config (YAML)")
    p.add_argument("--firmware", action="store_true", help="with bridge.port 'sim': the real firmware in simavr")
    p.set_defaults(func=run_daemon)


def run_daemon(args: argparse.Namespace) -> int:
    from device.config import load_config
    from device.service import (
        STATUS_MCU_SAFE,
        ExitCode,
        Notifier,
        ProgressWatchdog,
        ServiceSignals,
        exit_code_for,
    )
    from device.sorting.line import SortingLine

    notifier = Notifier.from_env()
    try:
        cfg = load_config(args.config)
    except Exception as exc:
        log.error("%s", exc)
        return exit_code_for(exc)
    with ServiceSignals(notifier) as sig:
        line = SortingLine(cfg, firmware=args.firmware)
        code: int = ExitCode.OK
        try:
            with notifier.extending("opening the camera, the model (engine build) and the MCU link",
                                    limit_s=ENGINE_BUILD_ALLOWANCE_S):
                line.open()
            assert line.sorter is not None and line.link is not None
            notifier.ready(f"sorting with {line.bundle.manifest.model_id() if line.bundle else '?'}")
            log.info("ready: device %s/%s", cfg.device.site, cfg.device.id)
            watchdog = ProgressWatchdog(notifier)
            next_status = time.monotonic() + STATUS_PERIOD_S
            while not sig.stop.wait(LOOP_PERIOD_S):
                watchdog.tick(line.sorter.last_frame_seq, line.link.last_heartbeat_ts)
                if not line.link.connected:
                    sig.request_stop("MCU link lost")
                    code = ExitCode.IOERR
                if time.monotonic() >= next_status:
                    snap = line.sorter.snapshot()
                    fps = line.pipeline.stats().get("fps_out", 0.0) if line.pipeline else 0.0
                    p99 = snap["decision_latency_ms"]["p99"]
                    notifier.status(f"{snap['items']} items, {fps:.1f} fps, decision p99 {p99} ms")
                    next_status = time.monotonic() + STATUS_PERIOD_S
            log.info("stopping: %s", sig.stop_reason)
        except Exception as exc:
            log.error("%s", exc, exc_info=not hasattr(exc, "exit_code"))
            code = exit_code_for(exc)
        finally:
            notifier.stopping()
            line.close()
            if line.mcu_safe:
                notifier.status(STATUS_MCU_SAFE)
                log.info("%s", STATUS_MCU_SAFE)
        return int(code)
