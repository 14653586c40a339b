"""`edgesort export`: a checkpoint into a verified bundle, or a bundle into a TensorRT engine.

    edgesort export CHECKPOINT --out DIR [--precision fp32|fp16|int8] [--calib SPEC] [--sign KEY]
    edgesort export engine BUNDLE --precision fp16|int8 [--dla N] [--cache DIR]
    edgesort export compare BUNDLE BUNDLE... --data SPEC --json FILE   (precisions side by side)

Registration stays light: torch, onnx and onnxruntime are imported inside the handler.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ENGINE_WORD = "engine"
COMPARE_WORD = "compare"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "export",
        help="checkpoint -> model bundle (ONNX, parity, FP16/INT8), or bundle -> TensorRT engine",
        usage=(
            "edgesort export CHECKPOINT --out DIR [--precision fp32|fp16|int8] [--calib SPEC] [--sign KEY]\n"
            "       edgesort export engine BUNDLE --precision fp16|int8 [--dla N] [--cache DIR]\n"
            "       edgesort export compare BUNDLE BUNDLE... --data SPEC --json FILE [--iters N]"
        ),
        description="Export a training checkpoint to a bundle the device runs; `export engine` builds a "
        "TensorRT engine from a bundle into the device's engine cache.",
    )
    p.add_argument("source", metavar="CHECKPOINT|engine|compare", help="checkpoint (.pt), 'engine' or 'compare'")
    p.add_argument("bundles", nargs="*", metavar="BUNDLE", help="with 'engine' or 'compare': bundle(s)")
    p.add_argument("--out", type=Path, help="bundle directory to write")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default=None,
        help="model precision (export: default fp32; engine: fp16 or int8, required)",
    )
    p.add_argument(
        "--calib",
        metavar="SPEC",
        help="data spec of calibration images (its train split): INT8 scales and calib.cache",
    )
    p.add_argument(
        "--int8-scheme",
        choices=("onnxruntime", "tensorrt"),
        default="onnxruntime",
        help="int8: uint8 activations, fastest with ONNX Runtime on CPUs (default), or symmetric int8 "
        "that TensorRT reads (explicit quantization)",
    )
    p.add_argument("--calib-split", default="train", choices=("train", "val", "test"))
    p.add_argument("--calib-images", type=int, default=256, help="how many calibration images (default 256)")
    p.add_argument(
        "--data",
        metavar="SPEC",
        help="data spec for parity and the accuracy gate (default: the checkpoint's own)",
    )
    p.add_argument("--parity-images", type=int, default=64, help="real images for the parity check (default 64)")
    p.add_argument(
        "--gate-images",
        type=int,
        default=0,
        help="held-out (val) images for the accuracy gate (default 0 = the whole val split)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="accuracy gate: largest top-1 drop against FP32, in points (default 1.0)",
    )
    p.add_argument("--sign", type=Path, metavar="KEY", help="Ed25519 private key (PEM): write manifest.sig")
    p.add_argument("--name", help="bundle name (default: the model card's)")
    p.add_argument("--version", dest="bundle_version", help="bundle version (default: the card's, or e<epoch>)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the checks (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle directory")
    p.add_argument(
        "--torch",
        action="store_true",
        help="also write model.pt2 (torch.export) for the device's torch backend (fp32 only)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="compare: where to write the results")
    p.add_argument("--iters", type=int, default=200, help="compare: timed batch-1 runs per bundle (default 200)")
    p.add_argument("--limit", type=int, default=0, help="compare: images for top-1 (default 0 = whole split)")
    p.add_argument("--dla", type=int, default=None, metavar="N", help="engine: Jetson DLA core")
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="engine: engine cache directory (default: the device's, /var/lib/edgesort/engines)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from device.errors import EdgesortError

    if args.source == ENGINE_WORD:
        return run_engine(args)
    if args.source == COMPARE_WORD:
        return run_compare(args)
    if args.bundles:
        raise EdgesortError(f"unexpected argument '{args.bundles[0]}' (`edgesort export engine BUNDLE`?)")
    if args.out is None:
        raise EdgesortError("--out DIR is required: where to write the bundle")
    if args.dla is not None or args.cache is not None:
        raise EdgesortError("--dla and --cache belong to `edgesort export engine BUNDLE`")
    return run_export(args)


def run_export(args: argparse.Namespace) -> int:
    import torch

    from device.contract import Precision
    from export.build import ExportOptions, build_bundle, input_spec_from_checkpoint
    from export.samples import load_image_set
    from training.checkpoint import load_checkpoint

    torch.set_num_threads(max(1, args.threads))
    precision: Precision = args.precision or "fp32"
    model, ckpt = load_checkpoint(args.source)
    spec = args.data or (ckpt.get("dataset") or {}).get("spec")
    if not spec:
        from export.errors import ExportError

        raise ExportError("the checkpoint names no data set; pass --data SPEC for the parity images")
    input_spec = input_spec_from_checkpoint(ckpt)
    labels = tuple(str(x) for x in ckpt["labels"])
    parity_set = load_image_set(spec, "val", args.parity_images, input_spec, labels)
    calib_set = load_image_set(args.calib, args.calib_split, args.calib_images, input_spec) if args.calib else None
    heldout = load_image_set(spec, "val", args.gate_images, input_spec, labels) if precision != "fp32" else None
    options = ExportOptions(
        precision=precision,
        name=args.name,
        version=args.bundle_version,
        opset=args.opset,
        command=shlex.join(["edgesort", *sys.argv[1:]]) if sys.argv[1:2] == ["export"] else "edgesort export",
        gate_tolerance_points=args.tolerance,
        sign_key=args.sign,
        force=args.force,
        threads=max(1, args.threads),
        checkpoint_path=Path(args.source),
        torch_program=args.torch,
        int8_scheme=args.int8_scheme,
    )
    res = build_bundle(model, ckpt, args.out, options, parity_set=parity_set, calib_set=calib_set, heldout_set=heldout)
    m = res.bundle.manifest
    p32 = res.parity["fp32"]
    print(
        f"bundle {res.bundle.root}: {m.model_id()}, {len(m.labels)} labels, "
        f"{m.files['model.onnx'].size / 1e6:.2f} MB model"
    )
    print(
        f"parity fp32 on {p32['images']} images of {p32['source']}: max abs diff {p32['max_abs_diff']:.2e}, "
        f"top-1 agreement {100 * p32['top1_agreement']:.1f}%"
    )
    if res.gate is not None:
        print(f"accuracy gate ({precision}): {res.gate.summary()}")
    if "calibration" in res.parity:
        print(
            f"TensorRT calibration cache: {res.parity['calibration']['tensors']} tensors "
            f"from {res.parity['calibration']['source']}"
        )
    if options.sign_key:
        print(f"signed with {options.sign_key}")
    return 0


def run_engine(args: argparse.Namespace) -> int:
    from device.errors import EdgesortError

    if len(args.bundles) != 1:
        raise EdgesortError("`edgesort export engine` needs exactly one BUNDLE")
    if args.precision not in ("fp16", "int8"):
        raise EdgesortError("`edgesort export engine` needs --precision fp16 or int8")
    from device.bundle import verify_bundle
    from device.engines import DEFAULT_CACHE_DIR, check_buildable, get_or_build_engine, trtexec_command

    bundle = verify_bundle(args.bundles[0])
    check_buildable(bundle, precision=args.precision, dla_core=args.dla)
    cache = args.cache or DEFAULT_CACHE_DIR
    print("equivalent trtexec command:")
    print("  " + trtexec_command(bundle, precision=args.precision, dla_core=args.dla, engine_path=None))
    path = get_or_build_engine(bundle, precision=args.precision, dla_core=args.dla, cache_dir=cache, progress=print)
    print(f"engine: {path}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    import json

    from device.errors import EdgesortError
    from export.compare import compare_bundles, markdown_table

    if not args.bundles or args.data is None or args.json is None:
        raise EdgesortError("`edgesort export compare` needs BUNDLE(s), --data SPEC and --json FILE")
    res = compare_bundles(
        [Path(b) for b in args.bundles],
        args.data,
        iters=args.iters,
        threads=max(1, args.threads),
        limit=args.limit,
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(markdown_table(res))
    print(f"-> {args.json}")
    return 0
