"""The training loop: one epoch of training, one pass of evaluation (after torchvision's references)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from training.metrics import Counts


def _progress(iterable: Iterable[Any], *, enabled: bool, desc: str, total: int) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, mininterval=2.0)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    epoch: int,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float | None = None,
    progress: bool = False,
    steps: int | None = None,
    frozen: Sequence[nn.Module] = (),
) -> dict[str, float]:
    """Train one pass over `loader`; the scheduler, when given, steps once per batch. `frozen` modules stay
    in eval mode (a transfer run keeps the pretrained BatchNorm statistics of layers it does not train)."""
    model.train()
    for module in frozen:
        module.eval()
    amp = scaler is not None and scaler.is_enabled()
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    start = time.perf_counter()
    total = steps if steps is not None else len(loader)  # type: ignore[arg-type]
    for images, targets in _progress(loader, enabled=progress, desc=f"epoch {epoch}", total=total):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
            loss = criterion(logits, targets)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}; lower --lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = targets.shape[0]
        loss_sum += loss.detach() * n
        correct += (logits.detach().argmax(1) == targets).sum()
        seen += n
    elapsed = time.perf_counter() - start
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)  # every rank reports the whole epoch, not its shard
    loss_total, correct_total, seen_total = totals.tolist()
    return {
        "loss": loss_total / max(seen_total, 1),
        "top1": correct_total / max(seen_total, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": seen_total / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed,
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    labels: list[str],
    *,
    split: str = "val",
    criterion: nn.Module | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1, top-5, loss, per-class precision/recall and the confusion matrix over `loader`.

    Under DDP each rank passes its own shard; the counts are summed across ranks before the summary."""
    model.eval()
    criterion = criterion or nn.CrossEntropyLoss()
    counts = Counts(len(labels), device)
    for images, targets in _progress(loader, enabled=progress, desc=split, total=len(loader)):  # type: ignore[arg-type]
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        logits = model(images).float()
        counts.update(logits, targets, criterion(logits, targets) * targets.shape[0])
    counts.all_reduce()
    return counts.summary(labels, split)


FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def onnxruntime_features(trunk: nn.Module, sample: torch.Tensor) -> FeatureFn:
    """The frozen trunk exported to ONNX and run by ONNX Runtime, checked against PyTorch on `sample`.

    A frozen trunk is a fixed function, and ONNX Runtime computes it several times faster than PyTorch eager
    on a CPU (EfficientNet-Lite0: about 5x on one thread), which is what keeps a linear probe short."""
    import tempfile
    import warnings

    import onnxruntime as ort

    trunk = trunk.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/trunk.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice: it needs no onnxscript
            torch.onnx.export(
                trunk,
                (sample[:1],),
                path,
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": images.float().numpy()})[0])

    with torch.inference_mode():
        want = trunk(sample)
    got = run(sample)
    scale = float(want.abs().max()) or 1.0
    if float((got - want).abs().max()) > 1e-3 * scale:
        raise RuntimeError(
            f"ONNX Runtime disagrees with PyTorch on the frozen trunk ({float((got - want).abs().max())})"
        )
    return run


@torch.inference_mode()
def extract_features(
    backbone: nn.Module | FeatureFn,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    progress: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen backbone once over a data set: (features, targets) on the CPU, for a linear probe."""
    if isinstance(backbone, nn.Module):
        backbone.eval()
    feats, targets = [], []
    for images, t in _progress(loader, enabled=progress, desc=desc, total=len(loader)):  # type: ignore[arg-type]
        feats.append(backbone(images.to(device)).float().cpu())
        targets.append(t)
    return torch.cat(feats), torch.cat(targets)
