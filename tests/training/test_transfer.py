"""Transfer modes of EfficientNet-Lite0; from-scratch torchvision models on 9-channel CUCUMBER-9 data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_fixtures import make_cucumber9, make_image_folder

from device.cli import main as edgesort
from training.checkpoint import load_checkpoint
from training.models import get_model, get_model_info
from training.train import set_trainable

FAST = ["--threads", "1", "--no-progress", "--no-tensorboard"]


@pytest.mark.parametrize("mode, trained", [("linear", {"_fc"}), ("top", {"_fc", "_blocks.15", "_conv_head"})])
def test_transfer_freezes_the_rest(mode: str, trained: set[str]) -> None:
    model = get_model("efficientnet_lite0", 4, pretrained=True, input_size=(64, 64))
    frozen = set_trainable(model, get_model_info("efficientnet_lite0"), mode)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(any(n.startswith(t + ".") for n in names) for t in trained)
    assert not any(n.startswith(("_conv_stem", "_blocks.0.", "_blocks.10.")) for n in names)
    assert model._bn0 in frozen and model._fc not in frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for m in frozen:
        m.eval()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.rand(4, 3, 64, 64)).sum().backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(before["_bn0.running_mean"], after["_bn0.running_mean"])  # frozen BN keeps its stats
    assert torch.equal(before["_blocks.0._depthwise_conv.weight"], after["_blocks.0._depthwise_conv.weight"])
    assert not torch.equal(before["_fc.weight"], after["_fc.weight"])


def test_linear_probe_on_cached_features(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", per_class=6)
    out = tmp_path / "run"
    assert (
        edgesort(
            [
                "train",
                "classify",
                "--data",
                f"folder:{root}?val=0.34&test=0",
                "--model",
                "efficientnet_lite0",
                "--transfer",
                "linear",
                "--epochs",
                "2",
                "--input-size",
                "64x64",
                "--out",
                str(out),
                "--lr",
                "0.01",
                *FAST,
            ]
        )
        == 0
    )
    model, ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["args"]["transfer"] == "linear" and ckpt["card"]["transfer"] == "linear"
    assert ckpt["mean"] == [127 / 255] * 3  # the Lite weights' own normalisation
    pretrained = get_model("efficientnet_lite0", 3, pretrained=True, input_size=(64, 64)).state_dict()
    for key in ("_conv_stem.weight", "_blocks.15._project_conv.weight", "_bn1.running_var"):
        assert torch.equal(model.state_dict()[key], pretrained[key]), key
    assert json.loads((out / "metrics.json").read_text())["transfer"] == "linear"


def test_mobilenet_on_nine_channel_cucumber9(tmp_path: Path) -> None:
    root = make_cucumber9(tmp_path / "c9", channels=9, per_class=4)
    out = tmp_path / "run"
    assert (
        edgesort(
            [
                "train",
                "classify",
                "--data",
                f"cucumber9:{root}",
                "--model",
                "mobilenet_v3_small",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--batch-size",
                "16",
                *FAST,
            ]
        )
        == 0
    )
    model, ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["in_channels"] == 9 and ckpt["input_size"] == [32, 32] and len(ckpt["mean"]) == 9
    with torch.no_grad():
        assert model(torch.rand(1, 9, 32, 32)).shape == (1, 9)


def test_transfer_needs_pretrained_weights(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = edgesort(
        [
            "train",
            "classify",
            "--data",
            f"mnist:{tiny_mnist}",
            "--model",
            "lenet5",
            "--transfer",
            "linear",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "o"),
            *FAST,
        ]
    )
    assert code != 0 and "has none" in capsys.readouterr().err


def test_top_on_cached_trunk_trains_only_the_top(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", per_class=4)
    out = tmp_path / "run"
    assert (
        edgesort(
            [
                "train",
                "classify",
                "--data",
                f"folder:{root}?val=0.5&test=0",
                "--model",
                "efficientnet_lite0",
                "--transfer",
                "top",
                "--epochs",
                "1",
                "--input-size",
                "64x64",
                "--out",
                str(out),
                "--batch-size",
                "4",
                *FAST,
            ]
        )
        == 0
    )
    model, _ = load_checkpoint(out / "best.pt")
    pretrained = get_model("efficientnet_lite0", 3, pretrained=True, input_size=(64, 64)).state_dict()
    trained = model.state_dict()
    assert torch.equal(trained["_blocks.10._project_conv.weight"], pretrained["_blocks.10._project_conv.weight"])
    assert torch.equal(trained["_blocks.10._bn2.running_mean"], pretrained["_blocks.10._bn2.running_mean"])
    assert not torch.equal(trained["_blocks.11._project_conv.weight"], pretrained["_blocks.11._project_conv.weight"])
    assert not torch.equal(trained["_conv_head.weight"], pretrained["_conv_head.weight"])
