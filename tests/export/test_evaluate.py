"""`edgesort eval BUNDLE --data SPEC --json FILE`: the bundle, via the device preprocessor + backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_helpers import mnist_spec

from device.cli import main


@pytest.fixture(scope="module")
def fp32_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "fp32"
    assert main(["export", str(tiny_checkpoint), "--out", str(out), "--parity-images", "16", "--torch"]) == 0
    return out


def test_eval_bundle_onnxruntime_and_torch_agree(fp32_bundle: Path, data_root: Path, tmp_path: Path, capsys):
    spec = mnist_spec(data_root)
    results = {}
    for backend in ("onnxruntime", "torch"):
        out = tmp_path / f"{backend}.json"
        assert (
            main(
                [
                    "eval",
                    str(fp32_bundle),
                    "--data",
                    spec,
                    "--limit",
                    "400",
                    "--backend",
                    backend,
                    "--json",
                    str(out),
                ]
            )
            == 0
        )
        results[backend] = json.loads(out.read_text())
    ort, pt = results["onnxruntime"], results["torch"]
    assert ort["count"] == 400 and ort["split"] == "val" and ort["backend"] == "onnxruntime"
    assert ort["top1"] > 0.9 and len(ort["confusion"]) == 10 and len(ort["per_class"]) == 10
    assert sum(map(sum, ort["confusion"])) == 400 and ort["top5"] >= ort["top1"]
    assert pt["backend"] == "torch" and pt["confusion"] == ort["confusion"]
    assert "top-1" in capsys.readouterr().out


def test_eval_refuses_foreign_data(fp32_bundle: Path, tmp_path: Path, capsys):
    folder = tmp_path / "fruit"
    for cls in ("apple", "pear"):
        (folder / cls).mkdir(parents=True)
        import cv2
        import numpy as np

        cv2.imwrite(str(folder / cls / "a.png"), np.zeros((8, 8, 3), np.uint8))
    code = main(["eval", str(fp32_bundle), "--data", f"folder:{folder}", "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert code != 0 and "classes the bundle does not know" in err and not (tmp_path / "x.json").exists()


def test_compare_precisions_side_by_side(
    fp32_bundle: Path, tiny_checkpoint: Path, data_root: Path, tmp_path: Path, capsys
):
    spec = mnist_spec(data_root)
    int8 = tmp_path / "int8"
    assert (
        main(
            [
                "export",
                str(tiny_checkpoint),
                "--out",
                str(int8),
                "--precision",
                "int8",
                "--calib",
                spec,
                "--calib-images",
                "64",
                "--gate-images",
                "300",
                "--parity-images",
                "16",
            ]
        )
        == 0
    )
    out = tmp_path / "compare.json"
    assert (
        main(
            [
                "export",
                "compare",
                str(fp32_bundle),
                str(int8),
                "--data",
                spec,
                "--limit",
                "200",
                "--iters",
                "5",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    fp32_row, int8_row = res["bundles"]
    assert [fp32_row["precision"], int8_row["precision"]] == ["fp32", "int8"]
    assert fp32_row["images"] == int8_row["images"] == 200 and abs(fp32_row["top1"] - int8_row["top1"]) < 0.03
    assert int8_row["model_bytes"] < fp32_row["model_bytes"] and fp32_row["speedup_vs_first"] == 1.0
    assert int8_row["latency_ms_median"] > 0 and "passed" in int8_row["gate"]
    assert "| fp32 |" in capsys.readouterr().out
