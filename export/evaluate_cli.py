"""`edgesort eval BUNDLE --data SPEC [--split val|test] [--backend onnxruntime|torch] --json FILE`.

Evaluates the bundle (not the checkpoint) through a device backend; the JSON holds top1, top5, per class and
the confusion matrix. Registration stays light: the heavy imports are in export/evaluate.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model bundle on a data set (top-1, per class, confusion)")
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle directory or .tar")
    p.add_argument("--data", required=True, metavar="SPEC", help="data spec, e.g. grocery:/data/grocery_store")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime")
    p.add_argument("--json", type=Path, required=True, metavar="FILE", help="where to write the metrics")
    p.add_argument("--batch", type=int, default=16, help="images per inference (default 16)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for inference (0 = library default)")
    p.add_argument("--limit", type=int, default=0, help="evaluate on this many images, spread over the split")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export.evaluate import evaluate_bundle

    if args.batch < 1:
        from device.errors import EdgesortError

        raise EdgesortError("--batch must be at least 1")
    res = evaluate_bundle(
        args.bundle,
        args.data,
        split=args.split,
        backend=args.backend,
        batch=args.batch,
        threads=args.threads,
        limit=args.limit,
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"{res['model_id']} on {res['count']} {args.split} images of {args.data} ({res['backend']}): "
        f"top-1 {100 * res['top1']:.2f}%, top-5 {100 * res['top5']:.2f}%, mean recall "
        f"{100 * res['mean_recall']:.2f}% -> {args.json}"
    )
    return 0
