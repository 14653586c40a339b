"""Classification training recipe, read top to bottom: data, model, optimiser, loop, final evaluation.

    edgesort train classify --data mnist:DATA/mnist --model deep_mnist --epochs 12 --out runs/deep_mnist
    torchrun --nproc_per_node 2 -m training.train --data ... --model ... --out ...

Writes to --out: best.pt (best val top-1), last.pt (+ optimiser state, for --resume), metrics.json,
confusion.png, curves.png and tb/ (TensorBoard). Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from device.errors import EdgesortError
from training import distributed as D
from training import engine
from training.checkpoint import (
    TRAINING_STATE_KEYS,
    git_revision,
    make_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from training.data import ClassificationData, DataError, DataInfo, FileData, build_dataset
from training.models import ModelInfo, get_model, get_model_info
from training.presets import eval_transform, train_transform

log = logging.getLogger("edgesort.train")
FEATURE_BATCH = 32


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    from training.cli import add_classify_arguments

    parser = argparse.ArgumentParser("edgesort train classify", add_help=add_help)
    add_classify_arguments(parser)
    return parser


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """vars(args) without what is not plain data (the CLI's handler function), for the checkpoint."""
    return {k: v for k, v in vars(args).items() if isinstance(v, str | int | float | bool | type(None) | list)}


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EdgesortError(f"--input-size must look like 224x224, not '{text}'") from None
    return h, w


def set_trainable(model: nn.Module, info: ModelInfo, transfer: str | None) -> list[nn.Module]:
    """Freeze what the transfer mode keeps; return the frozen modules, which stay in eval mode while training
    so that their BatchNorm statistics remain those of the pretrained weights."""
    if transfer in (None, "full"):
        return []
    prefixes = info.head_prefixes + (info.top_prefixes if transfer == "top" else ())
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(prefixes)
    frozen = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if (own and not any(p.requires_grad for p in own)) or (
            not own and isinstance(module, nn.modules.batchnorm._BatchNorm) and not f"{name}.".startswith(prefixes)
        ):
            frozen.append(module)
    return frozen


def head_module(model: nn.Module, info: ModelInfo) -> tuple[str, nn.Module]:
    name = info.head_prefixes[0].rstrip(".")
    return name, model.get_submodule(name)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def recorded_command(argv: list[str], world_size: int) -> str:
    """The command line as a user would type it again (`python -m training.train` or `edgesort ...`)."""
    rest = argv[argv.index("classify") + 1 :] if "classify" in argv else argv[1:]
    prefix = f"torchrun --nproc_per_node {world_size} --no-python " if world_size > 1 else ""
    return prefix + "edgesort train classify " + shlex.join(rest)


def init_from(model: nn.Module, path: str, arch: str, info: DataInfo) -> None:
    """Start from another run's weights (e.g. fine-tune everything after a linear probe: LP-FT)."""
    ck = read_checkpoint(path)
    if ck["arch"] != arch or ck["labels"] != info.labels or ck["in_channels"] != info.in_channels:
        raise EdgesortError(f"--init {path} is a {ck['arch']} for other labels or channels; it cannot start this run")
    model.load_state_dict(ck["model"])


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def frozen_split(
    model: nn.Module, info: ModelInfo, transfer: str | None
) -> tuple[nn.Module, nn.Module, Callable[[], None]] | None:
    """(frozen trunk, trainable rest, undo) for the transfer modes whose trunk output can be cached:
    linear (everything but the head) and top (where the architecture says how to split)."""
    if transfer == "linear":
        name, head = head_module(model, info)
        replace_module(model, name, nn.Identity())
        return model, head, lambda: replace_module(model, name, head)
    if transfer == "top" and info.top_split is not None:
        trunk, top = info.top_split(model)
        return trunk, top, lambda: None
    return None


def make_loader(ds: Any, batch: int, *, train: bool, state: D.DistState, workers: int, seed: int) -> DataLoader:
    if train:
        sampler: Any = (
            DistributedSampler(
                ds, num_replicas=state.world_size, rank=state.rank, shuffle=True, seed=seed, drop_last=False
            )
            if state.enabled
            else None
        )
        return DataLoader(
            ds,
            batch_size=batch,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=state.device.type == "cuda",
            drop_last=False,
        )
    if state.enabled:
        # Unpadded shards: DistributedSampler would pad with repeated samples and skew the metrics.
        ds = Subset(ds, list(range(state.rank, len(ds), state.world_size)))
    return DataLoader(
        ds,
        batch_size=batch,
        shuffle=False,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=state.device.type == "cuda",
    )


def make_scheduler(
    args: argparse.Namespace, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    from torch.optim import lr_scheduler as S

    total = max(1, args.epochs * steps_per_epoch)
    warmup = min(int(args.warmup_epochs * steps_per_epoch), total - 1)
    if args.sched == "cosine":
        main: S.LRScheduler = S.CosineAnnealingLR(optimizer, T_max=total - warmup)
    elif args.sched == "step":
        main = S.StepLR(optimizer, step_size=max(1, args.step_size * steps_per_epoch), gamma=args.gamma)
    else:
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup <= 0:
        return main
    warm = S.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
    return S.SequentialLR(optimizer, [warm, main], milestones=[warmup])


def try_split(spec: str, split: str, info: DataInfo) -> ClassificationData | None:
    try:
        return build_dataset(spec, split, eval_transform(info))
    except DataError as exc:
        log.info("no %s split: %s", split, exc)
        return None


def main(args: argparse.Namespace) -> int:
    state = D.init_distributed(args.device)
    try:
        return _run(args, state)
    finally:
        D.cleanup(state)


def _run(args: argparse.Namespace, state: D.DistState) -> int:
    t0, cpu0 = time.perf_counter(), time.process_time()
    if args.threads:
        torch.set_num_threads(args.threads)
    D.seed_everything(args.seed)
    out = Path(args.out)
    command = recorded_command(sys.argv, state.world_size)
    revision = git_revision()
    main_proc = state.is_main
    progress = args.progress and main_proc

    # --- data
    minfo = get_model_info(args.model)
    train_ds = build_dataset(args.data, "train")
    info = train_ds.info
    if args.input_size:
        info.input_size = parse_size(args.input_size)
    elif minfo.default_input_size and isinstance(train_ds, FileData):
        info.input_size = minfo.default_input_size
    if args.transfer:
        if not minfo.supports_pretrained:
            raise EdgesortError(f"--transfer needs pretrained weights, and model '{args.model}' has none")
        info.mean, info.std = minfo.pretrained_mean or info.mean, minfo.pretrained_std or info.std
    train_ds.transform = train_transform(info, args.augment)
    val_ds = build_dataset(args.data, "val", eval_transform(info))
    info.counts.update(val_ds.info.counts)
    if val_ds.info.labels != info.labels:
        raise DataError(f"{args.data}: the val split's labels differ from the train split's")
    workers = args.workers if args.workers >= 0 else (2 if isinstance(train_ds, FileData) else 0)
    if args.batch_size % state.world_size:
        raise EdgesortError(f"--batch-size {args.batch_size} must divide among {state.world_size} processes")
    batch = args.batch_size // state.world_size
    if main_proc:
        log.info(
            "data %s: train %d, val %d, %d classes, input %dx%d x%d",
            args.data,
            len(train_ds),
            len(val_ds),
            info.num_classes,
            *info.input_size,
            info.in_channels,
        )

    # --- model
    model = get_model(
        args.model,
        info.num_classes,
        info.in_channels,
        pretrained=args.transfer is not None,
        input_size=info.input_size,
    ).to(state.device)
    if args.init:
        init_from(model, args.init, args.model, info)
    frozen = set_trainable(model, minfo, args.transfer)
    split = frozen_split(model, minfo, args.transfer) if args.cache_features else None
    if split is not None:
        # The frozen part runs once per image in total; only the trainable rest trains, on its cached output.
        trunk, net, restore = split
        single = D.DistState(False, 0, 1, 0, state.device)  # every rank computes all features

        def feat_loader(ds: Any) -> DataLoader:
            # small batches: a 224 px CNN's activations at batch 256 take gigabytes in ONNX Runtime's arena
            return make_loader(ds, FEATURE_BATCH, train=False, state=single, workers=workers, seed=args.seed)

        train_ds.transform = eval_transform(info)
        runtime = args.feature_runtime
        if runtime == "auto":
            runtime = "onnxruntime" if state.device.type == "cpu" and has_module("onnxruntime") else "torch"
        try:
            extractor: Any = trunk
            if runtime == "onnxruntime":
                sample = torch.stack([val_ds[i][0] for i in range(min(4, len(val_ds)))])
                extractor = engine.onnxruntime_features(trunk, sample)
            tr_x, tr_y = engine.extract_features(
                extractor, feat_loader(train_ds), state.device, progress=progress, desc="features train"
            )
            va_x, va_y = engine.extract_features(
                extractor, feat_loader(val_ds), state.device, progress=progress, desc="features val"
            )
        finally:
            restore()
        if main_proc:
            log.info(
                "cached frozen features %s with %s, %.0f s since start",
                tuple(tr_x.shape[1:]),
                runtime,
                time.perf_counter() - t0,
            )
        train_set: Any = TensorDataset(tr_x, tr_y)
        val_set: Any = TensorDataset(va_x, va_y)
        workers, frozen = 0, []
    else:
        net, train_set, val_set = model, train_ds, val_ds
    train_loader = make_loader(train_set, batch, train=True, state=state, workers=workers, seed=args.seed)
    val_loader = make_loader(val_set, args.eval_batch_size, train=False, state=state, workers=workers, seed=args.seed)
    ddp_net: nn.Module = (
        nn.parallel.DistributedDataParallel(net, device_ids=[state.local_rank] if state.device.type == "cuda" else None)
        if state.enabled
        else net
    )

    # --- optimiser, schedule, AMP
    params = [p for p in net.parameters() if p.requires_grad]
    if args.opt == "adamw":
        wd = 0.01 if args.weight_decay is None else args.weight_decay
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=wd)
    else:
        wd = 5e-4 if args.weight_decay is None else args.weight_decay
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=wd, nesterov=True)
    scheduler = make_scheduler(args, optimizer, len(train_loader))
    amp = args.amp if args.amp is not None else state.device.type == "cuda"
    if amp and state.device.type != "cuda":
        raise EdgesortError("--amp needs CUDA; this run is on the CPU")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    # --- resume
    start_epoch, best, bad_epochs, history = 0, {"top1": -1.0, "loss": float("inf")}, 0, []
    if args.resume:
        ck = read_checkpoint(args.resume)
        missing = [k for k in TRAINING_STATE_KEYS if k not in ck]
        if missing:
            raise EdgesortError(f"{args.resume} has no training state ({', '.join(missing)}); resume from last.pt")
        if ck["arch"] != args.model or ck["labels"] != info.labels:
            raise EdgesortError(f"{args.resume} is a {ck['arch']} on other labels; it cannot resume this run")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["lr_scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch, best, bad_epochs, history = ck["epoch"] + 1, ck["best"], ck["bad_epochs"], ck["history"]
        if main_proc:
            log.info("resumed from %s at epoch %d (best val top-1 %.4f)", args.resume, start_epoch, best["top1"])

    writer = None
    if main_proc and args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
    plain = plain_args(args)
    plain["world_size"] = state.world_size

    def snapshot(metrics: dict[str, Any], epoch: int) -> dict[str, Any]:
        return make_checkpoint(
            model,
            arch=args.model,
            info=info,
            args=plain,
            metrics=metrics,
            epoch=epoch,
            command=command,
            revision=revision,
        )

    # --- loop
    for epoch in range(start_epoch, args.epochs):
        # Reseeding per epoch makes a resumed run draw the same augmentations as an uninterrupted one.
        D.seed_everything(args.seed + 1000 * epoch + state.rank)
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        tr = engine.train_one_epoch(
            ddp_net,
            criterion,
            optimizer,
            train_loader,
            state.device,
            epoch,
            scheduler=scheduler,
            scaler=scaler,
            clip_grad_norm=args.clip_grad_norm,
            progress=progress,
            frozen=frozen,
        )
        va = engine.evaluate(net, val_loader, state.device, info.labels, split="val", criterion=criterion)
        improved = va["top1"] > best["top1"] or (va["top1"] == best["top1"] and va["loss"] < best["loss"])
        if improved:
            best, bad_epochs = {"top1": va["top1"], "loss": va["loss"], "epoch": epoch}, 0
        else:
            bad_epochs += 1
        row = {
            "epoch": epoch,
            "train_loss": tr["loss"],
            "train_top1": tr["top1"],
            "val_loss": va["loss"],
            "val_top1": va["top1"],
            "val_top5": va["top5"],
            "lr": tr["lr"],
            "seconds": tr["seconds"],
            "images_per_s": tr["images_per_s"],
        }
        history.append(row)
        if main_proc:
            log.info(
                "epoch %d/%d  train loss %.4f top-1 %.4f | val loss %.4f top-1 %.4f top-5 %.4f | lr %.2e "
                "| %.0f img/s%s",
                epoch + 1,
                args.epochs,
                tr["loss"],
                tr["top1"],
                va["loss"],
                va["top1"],
                va["top5"],
                tr["lr"],
                tr["images_per_s"],
                "  *" if improved else "",
            )
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key.replace("_", "/", 1), value, epoch)
                writer.flush()
            if improved:
                save_checkpoint(snapshot(va, epoch), out / "best.pt")
            last = snapshot(va, epoch)
            last.update(
                optimizer=optimizer.state_dict(),
                lr_scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                best=best,
                history=history,
                bad_epochs=bad_epochs,
            )
            save_checkpoint(last, out / "last.pt")
        if args.patience and bad_epochs >= args.patience:
            if main_proc:
                log.info(
                    "early stop: no better val top-1 for %d epochs (best %.4f at epoch %d)",
                    bad_epochs,
                    best["top1"],
                    best["epoch"] + 1,
                )
            break
    train_wall = time.perf_counter() - t0
    if writer is not None:
        writer.close()
    D.barrier(state)
    if not history:
        raise EdgesortError(f"nothing to train: --epochs {args.epochs} and the run already reached epoch {start_epoch}")

    # --- final evaluation of the best weights on val and (where the data has one) test
    best_ck = read_checkpoint(out / "best.pt")
    model.load_state_dict(best_ck["model"])
    results = {
        "val": engine.evaluate(
            model,
            make_loader(val_ds, args.eval_batch_size, train=False, state=state, workers=workers, seed=args.seed),
            state.device,
            info.labels,
            split="val",
            criterion=criterion,
        )
    }
    test_ds = try_split(args.data, "test", info) if args.test else None
    if test_ds is not None:
        info.counts.update(test_ds.info.counts)
        results["test"] = engine.evaluate(
            model,
            make_loader(test_ds, args.eval_batch_size, train=False, state=state, workers=workers, seed=args.seed),
            state.device,
            info.labels,
            split="test",
            criterion=criterion,
        )
    report = results.get("test", results["val"])
    if main_proc:
        from training.plots import confusion_png, curves_png

        metrics = dict(report)
        metrics["splits"] = {k: {m: v[m] for m in ("count", "top1", "top5", "loss")} for k, v in results.items()}
        final = snapshot(metrics, best_ck["epoch"])
        save_checkpoint(final, out / "best.pt")
        doc = {
            "model": args.model,
            "data": args.data,
            "transfer": args.transfer,
            "command": command,
            "git_revision": revision,
            "world_size": state.world_size,
            "threads": torch.get_num_threads(),
            # wall time from start to the end of training (data, cached features, epochs), and in all;
            # CPU seconds of this process (all its threads): less sensitive to a shared machine's load
            "train_wall_seconds": round(train_wall, 1),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - cpu0, 1),
            "best_epoch": best_ck["epoch"],
            "report_split": report["split"],
            **results,
            "history": history,
        }
        (out / "metrics.json").write_text(json.dumps(doc, indent=1))
        confusion_png(
            report,
            out / "confusion.png",
            f"{args.model} on {report['split']}: top-1 {report['top1']:.4f} ({report['count']} images)",
        )
        curves_png(history, out / "curves.png")
        for name, m in results.items():
            log.info(
                "best epoch %d, %s: top-1 %.4f top-5 %.4f on %d images",
                best_ck["epoch"] + 1,
                name,
                m["top1"],
                m["top5"],
                m["count"],
            )
        log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        sys.exit(main(get_args_parser().parse_args()))
    except EdgesortError as exc:
        print(f"training: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
