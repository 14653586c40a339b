"""A device whose config requires signatures refuses unsigned or altered bundles (`edgesort check model`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bundle_fixtures import flip_byte, make_bundle

from device.bundle import Bundle
from device.cli import main
from device.contract import MANIFEST_NAME, MODEL_NAME
from device.signing import generate_keypair, sign_bundle


def _config(tmp_path: Path, bundle: Bundle, *, require: bool, keys: list[Path]) -> Path:
    cfg = tmp_path / "device.yaml"
    key_lines = "".join(f"\n    - {k}" for k in keys) if keys else " []"
    cfg.write_text(
        "model:\n"
        f"  bundle: {bundle.root}\n"
        "  backend: onnxruntime\n"
        f"  require_signature: {'true' if require else 'false'}\n"
        f"  trusted_keys:{key_lines}\n"
        f"paths:\n  state_dir: {tmp_path / 'state'}\n"
    )
    return cfg


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    generate_keypair(tmp_path / "release.key", tmp_path / "release.pub")
    generate_keypair(tmp_path / "rogue.key", tmp_path / "rogue.pub")
    return tmp_path / "release.key", tmp_path / "release.pub", tmp_path / "rogue.key"


def _check(cfg: Path, capsys) -> tuple[int, str]:
    code = main(["check", "model", "--config", str(cfg), "--seconds", "0.1"])
    return code, capsys.readouterr().err


def test_unsigned_bundle_refused_when_signatures_are_required(tmp_path: Path, keys, capsys) -> None:
    b = make_bundle(tmp_path)
    _, pub, _ = keys
    code, err = _check(_config(tmp_path, b, require=True, keys=[pub]), capsys)
    assert code == 65 and "unsigned" in err
    # the same bundle runs on a device that does not require signatures
    code, err = _check(_config(tmp_path, b, require=False, keys=[]), capsys)
    assert code == 0, err


def test_signed_bundle_accepted_and_altered_ones_refused(tmp_path: Path, keys, capsys) -> None:
    key, pub, rogue = keys
    b = make_bundle(tmp_path)
    sign_bundle(b.root, key)
    cfg = _config(tmp_path, b, require=True, keys=[pub])
    code, err = _check(cfg, capsys)
    assert code == 0, err

    # signed by a key the device does not trust
    sign_bundle(b.root, rogue)
    code, err = _check(cfg, capsys)
    assert code == 65 and "does not match any trusted key" in err
    sign_bundle(b.root, key)

    # manifest edited after signing (labels swapped): the signature no longer matches
    mpath = b.root / MANIFEST_NAME
    original = mpath.read_bytes()
    doc = json.loads(original)
    doc["labels"] = list(reversed(doc["labels"]))
    mpath.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    code, err = _check(cfg, capsys)
    assert code == 65 and "manifest.sig rejected" in err
    mpath.write_bytes(original)

    # one flipped byte in the model: the manifest (and its signature) still match, the hash does not
    flip_byte(b.root / MODEL_NAME)
    code, err = _check(cfg, capsys)
    assert code == 65 and "model.onnx does not match its sha256" in err
