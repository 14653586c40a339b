"""Classification metrics from sum-reducible counts (confusion matrix, top-k hits, loss sum).

Counts rather than per-sample lists so that DistributedDataParallel ranks merge them with one all_reduce."""

from __future__ import annotations

from typing import Any

import torch


class Counts:
    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.top5_hits = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor | None = None) -> None:
        k = min(5, self.num_classes)
        pred = logits.argmax(dim=1)
        self.confusion += torch.bincount(targets * self.num_classes + pred, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )
        self.top5_hits += (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).sum()
        if loss_sum is not None:
            self.loss_sum += loss_sum.double()

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            for t in (self.confusion, self.top5_hits, self.loss_sum):
                dist.all_reduce(t)

    def summary(self, labels: list[str], split: str) -> dict[str, Any]:
        return summarise(self.confusion.cpu(), int(self.top5_hits), float(self.loss_sum), labels, split)


def summarise(
    confusion: torch.Tensor, top5_hits: int, loss_sum: float, labels: list[str], split: str
) -> dict[str, Any]:
    """Rows of `confusion` are true classes, columns predictions."""
    total = int(confusion.sum())
    diag = confusion.diag()
    predicted = confusion.sum(dim=0)
    support = confusion.sum(dim=1)
    per_class: list[dict[str, Any]] = []
    for i, label in enumerate(labels):
        per_class.append(
            {
                "label": label,
                "precision": float(diag[i] / predicted[i]) if predicted[i] else 0.0,
                "recall": float(diag[i] / support[i]) if support[i] else 0.0,
                "support": int(support[i]),
            }
        )
    present = [c for c in per_class if c["support"]]
    return {
        "split": split,
        "count": total,
        "top1": float(diag.sum()) / total if total else 0.0,
        "top5": top5_hits / total if total else 0.0,
        "loss": loss_sum / total if total else 0.0,
        "mean_recall": sum(c["recall"] for c in present) / len(present) if present else 0.0,
        "labels": list(labels),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }
