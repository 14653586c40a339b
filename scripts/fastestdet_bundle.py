"""Wrap the pretrained FastestDet COCO detector (../shared/data/fastestdet) into an edgesort detect bundle.

    .venv/bin/python scripts/fastestdet_bundle.py ../shared/data/fastestdet runs/fastestdet_bundle

The ONNX file is used as published (input `input.1`, 1x3x352x352 BGR scaled to 0..1, no mean/std, a stretch
resize as in the upstream demo; output (1, 85, 22, 22) decoded by device.postprocess's `fastestdet_grid`).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from device.bundle import Bundle, InputSpec, Manifest, OutputSpec, Recipe, write_bundle

UPSTREAM = "https://github.com/dog-qiuqiu/FastestDet @ 50473cd155cb088aa4a99e64ff6a4b3c24fa07e1"


def make_bundle(
    src: Path, out: Path, *, score_threshold: float = 0.65, iou_threshold: float = 0.45
) -> Bundle:
    labels = tuple(n.strip() for n in (src / "coco.names").read_text().splitlines() if n.strip())
    if len(labels) != 80:
        raise ValueError(f"{src / 'coco.names'}: expected the 80 COCO class names, found {len(labels)}")
    manifest = Manifest(
        name="fastestdet-coco",
        version="1.0.0",
        task="detect",
        labels=labels,
        input=InputSpec(
            name="input.1",
            shape=(1, 3, 352, 352),
            dtype="float32",
            color_order="BGR",
            scale=1 / 255,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            resize="stretch",
        ),
        outputs=(OutputSpec(name="758", shape=(1, 85, 22, 22), meaning="fastestdet_grid"),),
        # 0.65 is the upstream demo's threshold for score = obj^0.6 * cls^0.4.
        postprocess={
            "score_threshold": score_threshold,
            "iou_threshold": iou_threshold,
            "max_detections": 100,
        },
        metrics={"coco_val_map50": 0.253, "coco_val_map50_95": 0.130, "source": "upstream README"},
        dataset={"name": "COCO 2017", "license": "CC BY 4.0 annotations; Flickr terms for images"},
        recipe=Recipe(
            command="scripts/fastestdet_bundle.py",
            created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        ),
        card={
            "arch": "FastestDet (ShuffleNetV2 + SPP + single-scale head)",
            "params": 252_938,
            "upstream": UPSTREAM,
            "license": "BSD-3-Clause",
        },
    )
    return write_bundle(out, manifest, {"model.onnx": src / "FastestDet.onnx"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="folder holding FastestDet.onnx and coco.names")
    ap.add_argument("out", type=Path, help="bundle directory to write")
    ap.add_argument("--score-threshold", type=float, default=0.65)
    args = ap.parse_args()
    b = make_bundle(args.src, args.out, score_threshold=args.score_threshold)
    print(f"wrote {b.root} ({b.manifest.model_id()})")


if __name__ == "__main__":
    main()
