import subprocess
import sys

import numpy as np
import pytest
from runtime_fixtures import reference_logits, tiny_bundle

from device.backends import BACKENDS, BackendError, available_backends, create_backend, register_backend
from device.backends.base import BackendOptions, load_builtin_backends
from device.backends.onnxruntime import provider_options
from device.bundle import Bundle, write_bundle

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Bundle:
    return tiny_bundle(tmp_path_factory.mktemp("tiny"))


def test_onnxruntime_matches_the_numpy_reference_at_batch_1_and_4(tiny):
    be = create_backend(tiny, "onnxruntime", threads=1)
    rng = np.random.default_rng(0)
    for n in (1, 4):
        x = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
        out = be.infer(x)
        assert list(out) == ["logits"]
        np.testing.assert_allclose(out["logits"], reference_logits(x), rtol=1e-4, atol=1e-4)
    assert be.providers[-1] == "CPUExecutionProvider"
    be.close()


def test_auto_picks_the_fastest_present_backend_and_a_fake_registers_like_a_real_one(tiny):
    load_builtin_backends()
    calls = []

    class Echo:
        name = "echo"

        def __init__(self, bundle, opts):
            self.opts = opts

        def infer(self, batch):
            calls.append(batch.shape)
            return {"logits": np.zeros((batch.shape[0], 3), np.float32)}

        def close(self):
            pass

    register_backend("echo", rank=-1, probe=lambda: None)(Echo)
    try:
        be = create_backend(tiny, "auto", threads=3)
        assert be.name == "echo" and be.opts.threads == 3
        BACKENDS["echo"] = BACKENDS["echo"].__class__("echo", Echo, -1, lambda: "not on this machine")
        assert create_backend(tiny, "auto").name != "echo"
        assert available_backends()["echo"] == "not on this machine"
    finally:
        del BACKENDS["echo"]
    with pytest.raises(ValueError, match="already registered"):
        register_backend("onnxruntime", rank=0, probe=lambda: None)(Echo)


def test_unknown_backend_and_unsupported_precision_are_one_sentence(tiny):
    with pytest.raises(BackendError, match="unknown backend 'tflite'"):
        create_backend(tiny, "tflite")
    with pytest.raises(BackendError, match="cannot run precision fp16"):
        provider_options(["CPUExecutionProvider"], BackendOptions(precision="fp16"))
    opts = provider_options(
        [
            "TensorrtExecutionProvider",
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
            "AzureExecutionProvider",
        ],
        BackendOptions(precision="fp16", dla_core=0),
    )
    assert [p for p, _ in opts] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert opts[0][1]["trt_fp16_enable"] and opts[0][1]["trt_dla_core"] == 0


def test_a_corrupt_model_or_a_wrong_input_name_is_a_clear_error(tmp_path, tiny):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a protobuf at all" * 10)
    broken = write_bundle(tmp_path / "broken", tiny.manifest, {"model.onnx": bad})
    with pytest.raises(BackendError, match="onnxruntime cannot load"):
        create_backend(broken, "onnxruntime")
    renamed = tiny.manifest.model_copy(update={"input": tiny.manifest.input.model_copy(update={"name": "x"})})
    other = write_bundle(tmp_path / "renamed", renamed, {"model.onnx": tiny.model_path})
    with pytest.raises(BackendError, match="manifest names input 'x'"):
        create_backend(other, "onnxruntime")


def test_torch_backend_without_torchscript_says_why(tiny):
    pytest.importorskip("torch")
    with pytest.raises(BackendError, match="runs a PyTorch model"):
        create_backend(tiny, "torch")


def test_torch_backend_runs_an_exported_program_twin(tmp_path, tiny):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from runtime_fixtures import weights

    w = {k: torch.from_numpy(v) for k, v in weights().items()}
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    with torch.no_grad():
        net[0].weight.copy_(w["conv_w"])
        net[0].bias.copy_(w["conv_b"])
        net[4].weight.copy_(w["fc_w"])
        net[4].bias.copy_(w["fc_b"])
    batch = torch.export.Dim("batch", min=1, max=16)
    ep = torch.export.export(net.eval(), (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    pt2 = tmp_path / "model.pt2"
    torch.export.save(ep, str(pt2))
    b = write_bundle(tmp_path / "b", tiny.manifest, {"model.onnx": tiny.model_path, "model.pt2": pt2})
    be = create_backend(b, "torch", threads=1)
    x = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(be.infer(x)["logits"], reference_logits(x), rtol=1e-4, atol=1e-4)


def test_fixed_batch_model_is_run_in_chunks(data_root, tmp_path):
    from runtime_fixtures import fastestdet_bundle

    b = fastestdet_bundle(data_root, tmp_path / "fd")
    be = create_backend(b, "onnxruntime", threads=1, warmup=0)
    x = np.random.default_rng(2).random((3, 3, 352, 352), np.float32)
    out = next(iter(be.infer(x).values()))
    assert out.shape == (3, 85, 22, 22)
    one = next(iter(be.infer(x[1:2]).values()))
    np.testing.assert_allclose(out[1:2], one, rtol=1e-5, atol=1e-6)


def test_device_runtime_never_imports_torch_at_module_level():
    code = (
        "import sys\n"
        "import device.backends, device.backends.base, device.backends.onnxruntime\n"
        "import device.backends.torch_backend, device.backends.tensorrt\n"
        "import device.pipeline, device.preprocess, device.postprocess, device.capture\n"
        "import device.commands.check, device.commands.bench\n"
        "bad = [m for m in ('torch', 'torchvision', 'training', 'export', 'onnxruntime', 'tensorrt') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
