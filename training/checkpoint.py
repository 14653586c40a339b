"""Self-describing checkpoints: everything `edgesort export` needs to rebuild and describe the model.

A checkpoint is a plain dict saved with torch.save:
    arch, num_classes, in_channels, input_size [H, W], mean, std, color_order ("RGB"|"GRAY"), resize, labels,
    args (plain dict), model (state_dict), metrics (top1, top5, per_class, confusion, ...), dataset (spec,
    counts), epoch, git_revision, card (dict)
and, in last.pt only, the training state for --resume: optimizer, lr_scheduler, scaler, best, history.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

from device.errors import EdgesortError
from training.data import DataInfo
from training.models import get_model

REQUIRED_KEYS = (
    "arch",
    "num_classes",
    "in_channels",
    "input_size",
    "mean",
    "std",
    "color_order",
    "resize",
    "labels",
    "args",
    "model",
    "metrics",
    "dataset",
    "epoch",
    "git_revision",
    "card",
)
TRAINING_STATE_KEYS = ("optimizer", "lr_scheduler", "scaler", "best", "history", "bad_epochs")


class CheckpointError(EdgesortError):
    exit_code = 65  # EX_DATAERR


def git_revision() -> str:
    """The commit that trained the model, with '-dirty' when training/'s Python files had local changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training/*.py"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def make_checkpoint(
    model: nn.Module,
    *,
    arch: str,
    info: DataInfo,
    args: dict[str, Any],
    metrics: dict[str, Any],
    epoch: int,
    command: str,
    revision: str,
) -> dict[str, Any]:
    card = {
        "name": arch,
        "task": "classify",
        "labels": list(info.labels),
        "in_channels": info.in_channels,
        "input_size": list(info.input_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "color_order": info.color_order,
        "resize": info.resize,
        "transfer": args.get("transfer"),
        "metrics": {k: metrics.get(k) for k in ("split", "count", "top1", "top5", "mean_recall")},
        "dataset": info.spec,
        "recipe": {
            "command": command,
            "git_revision": revision,
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    return {
        "arch": arch,
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "input_size": list(info.input_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "color_order": info.color_order,
        "resize": info.resize,
        "labels": list(info.labels),
        "args": dict(args),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics,
        "dataset": {"spec": info.spec, "counts": dict(info.counts)},
        "epoch": epoch,
        "git_revision": revision,
        "card": card,
    }


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write atomically, so a crash mid-save never leaves a truncated best.pt behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # Our checkpoints hold only tensors and plain Python values, so the safe loader reads them.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, RuntimeError) for a broken file
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} is not an edgesort checkpoint (not a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not an edgesort checkpoint: it lacks {', '.join(missing)}")
    return ckpt


def build_model(ckpt: dict[str, Any]) -> nn.Module:
    """The architecture of a checkpoint, without weights (never the ImageNet ones: the state_dict has all)."""
    return get_model(
        ckpt["arch"],
        ckpt["num_classes"],
        ckpt["in_channels"],
        pretrained=False,
        input_size=tuple(ckpt["input_size"]),
    )


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a checkpoint's model with its weights, in eval mode; return it with the checkpoint dict."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit its own architecture '{ckpt['arch']}': {exc}") from exc
    model.eval()
    return model, ckpt
