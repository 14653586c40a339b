"""Wrap the pretrained FastestDet COCO detector (../shared/data/fastestdet) into an edgesort detect bundle.

    .venv/bin/python scripts/fastestdet_bundle.py ../shared/data/fastestdet runs/fastestdet_bundle \
        --draw docs/fastestdet_boxes.png PHOTO [PHOTO ...]

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


def draw(bundle: Bundle, photos: list[Path], png: Path, columns: int = 2) -> None:
    """Run the bundle on real photos (onnxruntime, the device's own pre/post-processing) and save a grid."""
    import cv2
    import numpy as np

    from device.backends import create_backend
    from device.frames import Frame
    from device.pipeline import WholeFrameTask
    from device.postprocess import draw_detections

    backend = create_backend(bundle, "onnxruntime", threads=1)
    task = WholeFrameTask(bundle)
    tiles = []
    for p in photos:
        img = cv2.imread(str(p))
        if img is None:
            raise SystemExit(f"{p}: not a readable image")
        frame = Frame(img, 0.0, 0)
        batch, ctx = task.prepare(frame)
        dets = task.finish(frame, backend.infer(batch), ctx)
        print(f"{p.name}: " + ", ".join(f"{d.label} {d.score:.2f}" for d in dets))
        tile = cv2.resize(
            draw_detections(
                cv2.resize(img, (512, 512)), _scaled(dets, 512 / img.shape[1], 512 / img.shape[0])
            ),
            (512, 512),
        )
        cv2.putText(tile, p.name, (6, 506), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png), np.vstack(rows))
    backend.close()
    print(f"wrote {png}")


def _scaled(dets: list, sx: float, sy: float) -> list:  # type: ignore[type-arg]
    from dataclasses import replace

    return [replace(d, box=(d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy)) for d in dets]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="folder holding FastestDet.onnx and coco.names")
    ap.add_argument("out", type=Path, help="bundle directory to write")
    ap.add_argument("--score-threshold", type=float, default=0.65)
    ap.add_argument(
        "--draw",
        type=Path,
        nargs="+",
        default=None,
        metavar=("PNG", "PHOTO"),
        help="then draw the boxes found on these photos into one PNG (the first path)",
    )
    args = ap.parse_args()
    b = make_bundle(args.src, args.out, score_threshold=args.score_threshold)
    print(f"wrote {b.root} ({b.manifest.model_id()})")
    if args.draw:
        if len(args.draw) < 2:
            ap.error("--draw takes the PNG to write and at least one photo")
        draw(b, args.draw[1:], args.draw[0])


if __name__ == "__main__":
    main()
