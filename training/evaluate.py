"""Evaluate a checkpoint on any split of a data set: `edgesort train evaluate CKPT --data SPEC --split test`.

The data goes through the checkpoint's own evaluation transform (its input size, mean and std), so a model is
measured exactly as it was at the end of training, on data made now (e.g. the current twin)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from training import engine
from training.checkpoint import load_checkpoint
from training.data import DataError, build_dataset
from training.presets import eval_transform

log = logging.getLogger("edgesort.train")


def evaluate_checkpoint(path: Path, spec: str, split: str, *, batch_size: int = 64) -> dict[str, Any]:
    model, ckpt = load_checkpoint(path)
    ds = build_dataset(spec, split)
    info = ds.info
    if info.labels != ckpt["labels"]:
        raise DataError(f"{spec} has labels {info.labels[:5]}..., the checkpoint {ckpt['labels'][:5]}...")
    info.input_size = tuple(ckpt["input_size"])
    info.mean, info.std = tuple(ckpt["mean"]), tuple(ckpt["std"])
    ds.transform = eval_transform(info)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    metrics = engine.evaluate(model, loader, torch.device("cpu"), info.labels, split=split)
    metrics.update(checkpoint=str(path), data=spec)
    return metrics


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    metrics = evaluate_checkpoint(Path(args.checkpoint), args.data, args.split, batch_size=args.batch_size)
    log.info(
        "%s on %s %s: top-1 %.4f top-5 %.4f on %d images",
        args.checkpoint,
        args.data,
        args.split,
        metrics["top1"],
        metrics["top5"],
        metrics["count"],
    )
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    return 0
