"""`edgesort train classify ...`: the arguments (light: no torch import here) and the hand-off."""

from __future__ import annotations

import argparse
from typing import Any


def add_classify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="mnist:PATH | grocery:PATH[?labels=coarse&produce=1] | folder:PATH | cucumber9:PATH | twin:SEED",
    )
    p.add_argument("--model", required=True, help="architecture name (see --list-models)")
    p.add_argument("--out", required=True, help="run folder: best.pt, last.pt, metrics.json, PNGs, tb/")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument(
        "--transfer",
        choices=("linear", "top", "full"),
        default=None,
        help="start from pretrained weights and train the head only (linear), the last stages and "
        "the head (top) or everything (full); default: train from scratch",
    )
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split across torchrun processes")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--opt", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=None, help="default 0.01 for AdamW, 5e-4 for SGD")
    p.add_argument("--sched", choices=("cosine", "step", "none"), default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--step-size", type=int, default=10, help="epochs between LR drops (--sched step)")
    p.add_argument("--gamma", type=float, default=0.1, help="LR drop factor (--sched step)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--clip-grad-norm", type=float, default=None)
    p.add_argument(
        "--augment",
        default=None,
        help="augmentation preset: none|digits|crops|photos|small (default: the data set's own)",
    )
    p.add_argument(
        "--input-size",
        default=None,
        metavar="HxW",
        help="resize images to this size (default: the data set's, or the model's)",
    )
    p.add_argument(
        "--no-cache-features",
        dest="cache_features",
        action="store_false",
        help="--transfer linear|top: train through the frozen layers with augmentation instead of on "
        "their output computed once per image (no augmentation)",
    )
    p.add_argument(
        "--feature-runtime",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="what computes the cached frozen features (auto: ONNX Runtime on a CPU, checked against torch)",
    )
    p.add_argument("--patience", type=int, default=0, help="stop after N epochs without a better val top-1")
    p.add_argument("--resume", default=None, metavar="LAST_PT", help="continue a run from its last.pt")
    p.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="start from the weights of another run of the same model and labels (e.g. --transfer full after "
        "a linear or top run); the optimiser and schedule start fresh",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="float16 autocast + GradScaler (default: on with CUDA)",
    )
    p.add_argument(
        "--workers", type=int, default=-1, help="data loader workers (-1: 0 for in-memory data, 2 for files)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)")
    p.add_argument("--no-test", dest="test", action="store_false", help="skip the final test-split evaluation")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false")


def _classify(args: argparse.Namespace) -> int:
    from training.train import main

    return main(args)


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import run

    return run(args)


def _list_models(args: argparse.Namespace) -> int:
    from training.models import get_model_info, list_models

    for name in list_models():
        print(f"{name:20s} {get_model_info(name).description}")
    return 0


def register(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train models (classification)")
    sub = train.add_subparsers(dest="train_command", metavar="TASK", required=True)
    classify = sub.add_parser(
        "classify", help="train an image classifier", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_classify_arguments(classify)
    classify.set_defaults(func=_classify)
    ev = sub.add_parser("evaluate", help="evaluate a checkpoint on a split of a data set")
    ev.add_argument("checkpoint", help="best.pt or last.pt of a run")
    ev.add_argument("--data", required=True, metavar="SPEC", help="data spec, as for classify")
    ev.add_argument("--split", choices=("train", "val", "test"), default="test")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--threads", type=int, default=0)
    ev.add_argument("--json", default=None, help="write the metrics (per class, confusion) to this file")
    ev.set_defaults(func=_evaluate)
    models = sub.add_parser("models", help="list the architectures in the registry")
    models.set_defaults(func=_list_models)
