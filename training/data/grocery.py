"""The Grocery Store data set (Klasson et al., WACV 2019) from its list files.

List lines are `<relative path>, <fine id>, <coarse id>`; classes.csv names the ids. Options:
labels=fine|coarse (81 or 42 classes), produce=1 (only rows under Fruit/ and Vegetables/: 50 fine or 29 coarse
classes, renumbered in the original order). The test split is withheld from this project on purpose."""

from __future__ import annotations

import csv
from pathlib import Path

from training.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassificationData,
    DataError,
    DataInfo,
    FileData,
    check_options,
    option_bool,
    resolve_path,
)

PRODUCE = ("Fruit", "Vegetables")


def read_classes(root: Path, coarse: bool) -> tuple[dict[int, str], dict[int, str]]:
    """(names by id, top-level category by id) for the fine or coarse ids of classes.csv."""
    path = root / "classes.csv"
    if not path.is_file():
        raise DataError(f"Grocery Store file {path} is missing")
    names: dict[int, str] = {}
    category: dict[int, str] = {}
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                key = "Coarse Class" if coarse else "Class"
                cid = int(row[f"{key} ID (int)"])
                names[cid] = row[f"{key} Name (str)"]
                category[cid] = row["Iconic Image Path (str)"].strip("/").split("/")[1]
    except (KeyError, ValueError, IndexError, csv.Error) as exc:
        raise DataError(f"Grocery Store file {path} is broken: {exc}") from exc
    if sorted(names) != list(range(len(names))):
        raise DataError(f"Grocery Store file {path} is broken: class ids are not 0..{len(names) - 1}")
    return names, category


def read_list(root: Path, split: str) -> list[tuple[str, int, int]]:
    path = root / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"Grocery Store list file {path} is missing")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            rows.append((parts[0], int(parts[1]), int(parts[2])))
        except (IndexError, ValueError):
            raise DataError(f"Grocery Store list file {path} line {n} is not 'path, fine id, coarse id'") from None
    return rows


def build(spec: str, target: str, options: dict[str, str], split: str) -> ClassificationData:
    check_options(spec, options, {"labels", "produce"})
    level = options.get("labels", "fine")
    if level not in ("fine", "coarse"):
        raise DataError(f"data spec '{spec}': labels must be fine or coarse, not '{level}'")
    if split == "test":
        raise DataError("the Grocery Store test split is withheld from this project; evaluate on val")
    root = resolve_path(spec, target)
    coarse = level == "coarse"
    produce = option_bool(spec, options, "produce")
    names, category = read_classes(root, coarse)
    kept = [cid for cid in sorted(names) if not produce or category[cid] in PRODUCE]
    index = {cid: i for i, cid in enumerate(kept)}
    paths, targets = [], []
    for rel, fine, coarse_id in read_list(root, split):
        cid = coarse_id if coarse else fine
        if cid not in names:
            raise DataError(f"Grocery Store list {root / (split + '.txt')} names class {cid}, absent from classes.csv")
        if produce and rel.split("/")[1] not in PRODUCE:
            continue
        paths.append(root / rel)
        targets.append(index[cid])
    info = DataInfo(
        spec=spec,
        source="grocery",
        labels=[names[c] for c in kept],
        in_channels=3,
        input_size=(224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        color_order="RGB",
        augment="photos",
        counts={split: len(paths)},
    )
    return FileData(info, paths, targets, split)
