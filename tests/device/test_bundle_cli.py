"""`edgesort bundle verify|inspect|sign|keygen|pack` through the real command line entry (device.cli.main)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from bundle_fixtures import flip_byte, make_bundle

from device.cli import main
from device.contract import MANIFEST_NAME, MODEL_NAME, SIGNATURE_NAME


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_intact_bundle(tmp_path: Path, capsys) -> None:
    b = make_bundle(tmp_path)
    code, out, _ = _run(capsys, "bundle", "verify", str(b.root))
    assert code == 0 and "OK" in out and "unsigned" in out and "linear-test@1/fp32" in out


@pytest.mark.parametrize("offset", [0, None, -1])
def test_one_flipped_byte_in_the_model_fails_verify(tmp_path: Path, capsys, offset: int | None) -> None:
    b = make_bundle(tmp_path)
    flip_byte(b.root / MODEL_NAME, offset)
    code, out, err = _run(capsys, "bundle", "verify", str(b.root))
    assert code == 65 and out == ""
    assert "model.onnx does not match its sha256" in err and err.count("\n") == 1


def test_flipped_byte_in_an_extra_file_fails_verify(tmp_path: Path, capsys) -> None:
    b = make_bundle(tmp_path, extra={"calib.cache": b"TRT-8601-EntropyCalibration2\nimages: 3c010a14\n"})
    flip_byte(b.root / "calib.cache")
    code, _, err = _run(capsys, "bundle", "verify", str(b.root))
    assert code == 65 and "calib.cache does not match" in err


def test_missing_and_truncated_files_fail_verify(tmp_path: Path, capsys) -> None:
    b = make_bundle(tmp_path)
    model = b.root / MODEL_NAME
    model.write_bytes(model.read_bytes()[:-1])
    code, _, err = _run(capsys, "bundle", "verify", str(b.root))
    assert code == 65 and "model.onnx is" in err and "bytes, the manifest says" in err
    model.unlink()
    code, _, err = _run(capsys, "bundle", "verify", str(b.root))
    assert code == 65 and "missing" in err


def test_keygen_sign_verify_and_reject(tmp_path: Path, capsys) -> None:
    b = make_bundle(tmp_path)
    assert _run(capsys, "bundle", "keygen", str(tmp_path / "keys" / "release"))[0] == 0
    assert _run(capsys, "bundle", "keygen", str(tmp_path / "keys" / "other"))[0] == 0
    key, pub, other_pub = (tmp_path / "keys" / n for n in ("release.key", "release.pub", "other.pub"))
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    code, _, err = _run(capsys, "bundle", "keygen", str(tmp_path / "keys" / "release"))
    assert code != 0 and "refusing to overwrite" in err

    # unsigned: fine without a requirement, refused with one
    assert _run(capsys, "bundle", "verify", str(b.root), "--key", str(pub))[0] == 0
    code, _, err = _run(capsys, "bundle", "verify", str(b.root), "--require-signature", "--key", str(pub))
    assert code == 65 and "unsigned" in err

    assert _run(capsys, "bundle", "sign", str(b.root), "--key", str(key))[0] == 0
    assert (b.root / SIGNATURE_NAME).stat().st_size == 64
    code, out, _ = _run(capsys, "bundle", "verify", str(b.root), "--require-signature", "--key", str(pub))
    assert code == 0 and "signature valid" in out
    # a key the device does not trust
    code, _, err = _run(capsys, "bundle", "verify", str(b.root), "--require-signature", "--key", str(other_pub))
    assert code == 65 and "does not match any trusted key" in err
    # several trusted keys: any one that verifies is enough
    assert _run(capsys, "bundle", "verify", str(b.root), "--key", str(other_pub), "--key", str(pub))[0] == 0


def test_altered_manifest_of_a_signed_bundle_is_refused(tmp_path: Path, capsys) -> None:
    b = make_bundle(tmp_path)
    _run(capsys, "bundle", "keygen", str(tmp_path / "k"))
    _run(capsys, "bundle", "sign", str(b.root), "--key", str(tmp_path / "k.key"))
    mpath = b.root / MANIFEST_NAME
    doc = json.loads(mpath.read_text())
    doc["labels"] = ["a", "c", "b"]  # swap two grades: hashes of the files still match
    mpath.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    code, _, err = _run(capsys, "bundle", "verify", str(b.root), "--key", str(tmp_path / "k.pub"))
    assert code == 65 and "manifest.sig rejected" in err


def test_sign_refuses_an_altered_bundle(tmp_path: Path, capsys) -> None:
    b = make_bundle(tmp_path)
    _run(capsys, "bundle", "keygen", str(tmp_path / "k"))
    flip_byte(b.root / MODEL_NAME)
    code, _, err = _run(capsys, "bundle", "sign", str(b.root), "--key", str(tmp_path / "k.key"))
    assert code == 65 and "does not match" in err
    assert not (b.root / SIGNATURE_NAME).exists()


def test_pack_then_verify_and_inspect_the_tar(tmp_path: Path, capsys) -> None:
    b = make_bundle(tmp_path)
    _run(capsys, "bundle", "keygen", str(tmp_path / "k"))
    _run(capsys, "bundle", "sign", str(b.root), "--key", str(tmp_path / "k.key"))
    tar = tmp_path / "b.tar"
    assert _run(capsys, "bundle", "pack", str(b.root), str(tar))[0] == 0
    code, out, _ = _run(capsys, "bundle", "verify", str(tar), "--require-signature", "--key", str(tmp_path / "k.pub"))
    assert code == 0 and "signature valid" in out
    code, out, _ = _run(capsys, "bundle", "inspect", str(tar))
    assert code == 0 and "linear-test@1/fp32" in out and "signed     yes" in out and "images ['batch', 3, 8, 8]" in out
    code, out, _ = _run(capsys, "bundle", "inspect", str(b.root), "--json")
    assert code == 0 and json.loads(out)["labels"] == ["a", "b", "c"]


def test_not_a_bundle_is_one_sentence(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "bundle", "verify", str(tmp_path / "nothing"))
    assert code == 65 and "bundle not found" in err
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all")
    code, _, err = _run(capsys, "bundle", "inspect", str(tmp_path / "junk.tar"))
    assert code == 65 and "not a readable bundle archive" in err
