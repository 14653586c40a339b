"""`edgesort check config|camera|model|bridge`: bring-up checks a technician reads in one screen (STYLE 11).

`check config FILE` validates the device config (systemd runs it as ExecStartPre=). The others open one thing
named by the config, exercise it for a few seconds and print plain numbers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("/etc/edgesort/config.yaml")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("check", help="validate the config; bring up a camera, a model, the MCU bridge")
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    c = sub.add_parser("config", help="validate a device config file")
    c.add_argument("file", type=Path)
    c.set_defaults(func=check_config)
    for name, func, extra in (
        ("camera", check_camera, "read frames for a few seconds; print fps, drops, frame size"),
        ("model", check_model, "load the bundle on its backend; print latency and the top result"),
        ("bridge", check_bridge, "connect to the MCU; print status, a round trip and link counters"),
    ):
        s = sub.add_parser(name, help=extra)
        s.add_argument(
            "--config", type=Path, default=DEFAULT_CONFIG, help=f"device config (default {DEFAULT_CONFIG})"
        )
        s.add_argument("--seconds", type=float, default=5.0, help="how long to exercise it")
        if name == "camera":
            s.add_argument("--camera", default=None, help="camera name (default: the first one)")
            s.add_argument("--save", type=Path, default=None, help="write the last frame to this image file")
        if name == "model":
            s.add_argument("--image", type=Path, default=None, help="run the model on this image too")
        s.set_defaults(func=func)


def check_config(args: argparse.Namespace) -> int:
    from device.config import load_config

    cfg = load_config(args.file)
    print(f"{args.file}: valid")
    print(f"  device   {cfg.device.site}/{cfg.device.id}")
    for cam in cfg.cameras:
        print(f"  camera   {cam.name}: {cam.uri} {cam.width}x{cam.height}@{cam.fps:g} (view {cam.view})")
    m = cfg.model
    print(f"  model    {m.bundle} on {m.backend} ({m.precision}, batch {m.batch})")
    gates = ", ".join(f"{g.id}@{g.distance_mm:g}mm" for g in cfg.line.gates)
    print(f"  gates    {gates}; decision line {cfg.line.decision_line_mm:g} mm")
    print(
        f"  budget   {cfg.decision_budget_ms():.1f} ms from decision to the nearest gate at "
        f"{cfg.line.max_belt_speed_mps:g} m/s"
    )
    print(f"  bridge   {cfg.bridge.port} @ {cfg.bridge.baud}")
    print(f"  mqtt     {cfg.mqtt.url or 'off (outbox only)'}")
    return 0


def check_camera(args: argparse.Namespace) -> int:
    import cv2

    from device.capture import CaptureThread, open_source
    from device.config import load_config
    from device.errors import ConfigError

    cfg = load_config(args.config)
    cams = [c for c in cfg.cameras if args.camera in (None, c.name)]
    if not cams:
        raise ConfigError(f"{args.config}: no camera named '{args.camera}'")
    cam = cams[0]
    print(f"camera {cam.name}: {cam.uri}")
    src = open_source(cam.uri, name=cam.name, width=cam.width, height=cam.height, fps=cam.fps)
    t0 = time.monotonic()
    last = None
    with CaptureThread(src, stall_timeout_s=cam.stall_timeout_s) as cap:
        print(f"  opened in {(time.monotonic() - t0) * 1e3:.0f} ms")
        end = time.monotonic() + args.seconds
        taken = 0
        while time.monotonic() < end and not cap.finished:
            f = cap.get(0.5)
            if f is not None:
                last, taken = f, taken + 1
        st = cap.stats()
    if last is None:
        print("  no frame in", f"{args.seconds:g} s", f"(state {st['state']})")
        return 1
    h, w = last.image.shape[:2]
    print(f"  frames   {st['frames']} in {args.seconds:g} s = {st['fps']:.1f} fps (asked {cam.fps:g})")
    print(
        f"  size     {w}x{h}"
        + ("" if (w, h) == (cam.width, cam.height) else f" (asked {cam.width}x{cam.height})")
    )
    print(f"  dropped  {st['dropped']} (frames this check did not take in time)")
    print(f"  stalls   {st['stalls']}, reopens {st['reopens']}")
    print(f"  mean     {last.image.mean():.0f}/255 brightness of the last frame")
    if args.save:
        cv2.imwrite(str(args.save), last.image)
        print(f"  saved    {args.save}")
    return 0


def check_model(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from device.backends import available_backends, create_backend
    from device.bundle import verify_bundle
    from device.config import load_config
    from device.errors import EdgesortError
    from device.postprocess import Postprocessor
    from device.preprocess import Preprocessor

    cfg = load_config(args.config)
    m = cfg.model
    bundle = verify_bundle(
        _bundle_path(m.bundle), require_signature=m.require_signature, trusted_keys=m.trusted_keys
    )
    man = bundle.manifest
    print(f"model {man.model_id()}: {man.task}, {len(man.labels)} labels, input {man.input.shape}")
    print(f"  signed   {'yes' if bundle.signed else 'no'}")
    for name, why in available_backends().items():
        print(f"  backend  {name:12s} {'present' if why is None else why}")
    t0 = time.monotonic()
    be = create_backend(
        bundle,
        m.backend,
        threads=m.threads,
        precision=m.precision,
        dla_core=m.dla_core,
        engine_cache=cfg.paths.engine_cache,
    )
    print(f"  loaded   {be.name} in {(time.monotonic() - t0):.1f} s (warm-up included)")
    pre, post = Preprocessor(man.input), Postprocessor(man)
    if args.image:
        img = cv2.imread(str(args.image))
        if img is None:
            raise EdgesortError(f"{args.image}: not a readable image")
    else:
        img = np.random.default_rng(0).integers(0, 256, (man.input.height, man.input.width, 3), np.uint8)
    batch, tfs = pre.prepare([img])
    lat: list[float] = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end or len(lat) < 3:
        t = time.perf_counter()
        out = be.infer(batch)
        lat.append((time.perf_counter() - t) * 1e3)
    a = np.array(lat)
    print(
        f"  latency  {np.median(a):.2f} ms median, {np.percentile(a, 99):.2f} ms p99 over {a.size} runs "
        f"(batch 1) = {1e3 / np.median(a):.0f} inferences/s"
    )
    res = post(out, tfs)[0]
    print(f"  result   {_describe(res)}" + ("" if args.image else " (random pixels)"))
    be.close()
    return 0


def check_bridge(args: argparse.Namespace) -> int:
    from device.config import load_config
    from device.errors import EdgesortError, require

    cfg = load_config(args.config)
    link_mod = require("firmware_bridge.link", "edgesort check bridge")
    b = cfg.bridge
    sim = None
    port = b.port
    if port == "sim":
        sim_mod = require("firmware_bridge.mcu_sim", "edgesort check bridge with port 'sim'")
        sim = sim_mod.McuSimulator(on_gate=lambda *_: None)
        port = sim.start()
        print(f"bridge: the Python MCU simulator on {port}")
    else:
        print(f"bridge: {port} @ {b.baud}")
    try:
        with link_mod.BridgeLink(
            port, baud=b.baud, ack_timeout_s=b.ack_timeout_ms / 1e3, retries=b.retries
        ) as link:
            print(f"  mcu      {link.info}")
            print(f"  status   {link.status()}")
            rtts = []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                rtts.append(link.ping() * 1e3)
                time.sleep(0.05)  # a ping every 50 ms: enough samples without crowding the link
            rtts.sort()
            print(
                f"  ping     {rtts[len(rtts) // 2]:.2f} ms median, {rtts[-1]:.2f} ms max, {len(rtts)} pings"
            )
            print(f"  counters {link.counters}")
    except link_mod.BridgeError as exc:
        raise EdgesortError(f"bridge {port}: {exc}") from exc
    finally:
        if sim is not None:
            sim.stop()
    return 0


def _bundle_path(p: Path) -> Path:
    from device.sorting.line import resolve_bundle_path  # 'demo' = the bundle shipped in device/assets

    return resolve_bundle_path(p)


def _describe(res: object) -> str:
    from device.postprocess import Classification, Segmentation

    if isinstance(res, Classification):
        return ", ".join(f"{n} {p:.2f}" for n, p in res.top[:3])
    if isinstance(res, Segmentation):
        return ", ".join(f"{k} {v:.0%}" for k, v in sorted(res.areas.items(), key=lambda kv: -kv[1])[:3])
    if isinstance(res, list):
        return f"{len(res)} detections" + "".join(f"; {d.label} {d.score:.2f}" for d in res[:3])
    return str(res)
