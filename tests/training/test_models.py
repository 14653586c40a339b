from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from device.errors import EdgesortError
from training.models import get_model, get_model_info, list_models, register_model

SHAPES = {
    "deep_mnist": (1, (28, 28)),
    "lenet5": (1, (28, 28)),
    "twin_cnn": (3, (48, 144)),
    "resnet18": (3, (32, 32)),
    "mobilenet_v3_small": (9, (32, 32)),
}


def test_registry_lists_the_issue_models() -> None:
    assert {
        "deep_mnist",
        "lenet5",
        "twin_cnn",
        "resnet18",
        "mobilenet_v3_small",
        "efficientnet_lite0",
    } <= set(list_models())


def test_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("lenet5", "again")(lambda **_: nn.Identity())


def test_unknown_model_is_one_clear_error() -> None:
    with pytest.raises(EdgesortError, match="unknown model 'nope'"):
        get_model("nope", 10)


def test_scratch_model_refuses_pretrained() -> None:
    with pytest.raises(EdgesortError, match="no pretrained weights"):
        get_model("resnet18", 10, pretrained=True)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_output_shape(name: str) -> None:
    channels, size = SHAPES[name]
    model = get_model(name, 9, channels, input_size=size).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, channels, *size)).shape == (2, 9)


def test_deep_mnist_is_the_seed_architecture() -> None:
    m = get_model("deep_mnist", 10, 1)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert [(c.kernel_size, c.out_channels) for c in convs] == [((5, 5), 32), ((5, 5), 64)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(7 * 7 * 64, 1024), (1024, 10)]
    assert any(isinstance(x, nn.Dropout) for x in m.modules())


def test_efficientnet_lite0_loads_imagenet_weights_from_the_wheel() -> None:
    from training.models.efficientnet import weights_path

    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = get_model("efficientnet_lite0", 5, pretrained=True)
    assert torch.equal(model.state_dict()["_conv_stem.weight"], state["_conv_stem.weight"])
    assert model.state_dict()["_fc.weight"].shape == (5, 1280)
    info = get_model_info("efficientnet_lite0")
    assert info.supports_pretrained and info.head_prefixes == ("_fc.",)


def test_twin_cnn_exports_to_onnx_and_matches(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = get_model("twin_cnn", 9, 3).eval()
    path = tmp_path / "twin.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter needs no onnxscript
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 48, 144),),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    x = np.random.default_rng(0).random((4, 3, 48, 144), dtype=np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
