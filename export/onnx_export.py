"""PyTorch module -> checked, simplified ONNX file with a dynamic batch and the model card in its metadata.

Tensor names come from device/contract.py, so the device finds them without a flag. Steps, each failing
loudly: torch.onnx.export (TorchScript) -> onnx.checker -> onnxslim -> metadata_props -> checker -> save.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAMES, Task
from export.errors import ExportError

if TYPE_CHECKING:
    import onnx
    import torch

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # TensorRT 8.5 (JetPack 5.1) parses up to 17; onnxruntime >= 1.14 runs it
MIN_OPSET = 17
METADATA_PREFIX = "edgesort."


@dataclass(frozen=True)
class OnnxReport:
    path: Path
    opset: int
    input_name: str
    output_name: str
    nodes_before_slim: int
    nodes_after_slim: int


def metadata_entries(card: Mapping[str, Any], labels: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The key/value pairs written into ONNX metadata_props: the card as JSON and the labels as JSON."""
    return {
        f"{METADATA_PREFIX}card": json.dumps(card, sort_keys=True, default=str),
        f"{METADATA_PREFIX}labels": json.dumps(list(labels)),
    }


def set_metadata(model: onnx.ModelProto, entries: Mapping[str, str]) -> None:
    import onnx

    keep = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in sorted(entries.items()):
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))


def read_metadata(path: Path) -> dict[str, str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}


def export_onnx(
    model: torch.nn.Module,
    out_path: Path,
    *,
    input_shape: tuple[int, int, int],
    task: Task = "classify",
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, str] | None = None,
    simplify: bool = True,
) -> OnnxReport:
    """Export `model` (eval mode) for NCHW float32 input of `input_shape` (C, H, W) with a dynamic batch."""
    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is below {MIN_OPSET}, the oldest this project exports")
    if model.training:
        raise ExportError("the model is in training mode; call .eval() before export (BatchNorm/Dropout differ)")
    output_name = OUTPUT_NAMES[task]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros((2, *input_shape), dtype=torch.float32)
    raw_path = out_path.with_suffix(".raw.onnx")
    # The TorchScript exporter (dynamo=False): the dynamo exporter needs onnxscript, which is not in our
    # dependency set, and the TorchScript graphs are the ones TensorRT's ONNX parser is most tested with.
    # Its deprecation warning is caught here, in this call only, and logged once instead of printed.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                model,
                (dummy,),
                str(raw_path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[output_name],
                dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, output_name: {0: BATCH_DIM}},
                opset_version=opset,
                do_constant_folding=True,
            )
        except Exception as exc:  # torch raises many unrelated types here; the message is what helps
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    for w in caught:
        log.debug("torch.onnx.export: %s", w.message)
    try:
        proto = onnx.load(str(raw_path))
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported ONNX graph is invalid: {exc}") from exc
    finally:
        raw_path.unlink(missing_ok=True)
    before = len(proto.graph.node)
    if simplify:
        proto = slim(proto)
    if metadata:
        set_metadata(proto, metadata)
    proto.producer_name = "edgesort"
    _check_io(proto, output_name)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the simplified ONNX graph is invalid: {exc}") from exc
    onnx.save(proto, str(out_path))
    log.info("ONNX: %s (opset %d, %d -> %d nodes)", out_path, opset, before, len(proto.graph.node))
    return OnnxReport(out_path, opset, INPUT_NAME, output_name, before, len(proto.graph.node))


def slim(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim: constant folding, dead-node and redundant-op removal; keeps names of graph inputs/outputs."""
    import onnxslim

    try:
        out = onnxslim.slim(proto)
    except Exception as exc:  # onnxslim raises library-internal types; the message names the node
        raise ExportError(f"onnxslim failed to simplify the graph: {type(exc).__name__}: {exc}") from exc
    if out is None:
        raise ExportError("onnxslim returned no model")
    return out


def _check_io(proto: onnx.ModelProto, output_name: str) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [output_name]:
        raise ExportError(
            f"the ONNX graph has inputs {inputs} and outputs {outputs}; expected [{INPUT_NAME!r}] and [{output_name!r}]"
        )
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if dim0.dim_param != BATCH_DIM:
        raise ExportError(f"the ONNX input's batch dimension is not dynamic ('{dim0}')")
