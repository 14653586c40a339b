"""`edgesort export CHECKPOINT --out DIR [--sign KEY]` end to end: checkpoint -> signed, verified bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.bundle import verify_bundle
from device.cli import main
from device.signing import generate_keypair


def test_export_checkpoint_to_signed_bundle(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    out = tmp_path / "bundle"
    code = main(
        [
            "export",
            str(tiny_checkpoint),
            "--out",
            str(out),
            "--sign",
            str(tmp_path / "k.key"),
            "--parity-images",
            "32",
        ]
    )
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "parity fp32 on 32 images" in stdout and "top-1 agreement 100.0%" in stdout
    b = verify_bundle(out, require_signature=True, trusted_keys=[tmp_path / "k.pub"])
    m = b.manifest
    assert m.parity["fp32"]["source"].endswith(":val[32]") and m.parity["fp32"]["passed"]
    assert m.card["export"]["checkpoint_sha256"] and m.card["arch"] == "lenet5"
    assert m.recipe.git_revision and m.recipe.command.startswith("edgesort export")
    assert main(["bundle", "verify", str(out), "--require-signature", "--key", str(tmp_path / "k.pub")]) == 0


def test_export_usage_errors_are_one_sentence(tmp_path: Path, tiny_checkpoint: Path, capsys) -> None:
    assert main(["export", str(tiny_checkpoint)]) == 1
    assert "--out DIR is required" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")]) == 65
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["export", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "b")]) == 65
    assert "cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv", [["engine"], ["engine", "x", "--precision", "fp32"]])
def test_export_engine_usage(argv: list[str], capsys) -> None:
    assert main(["export", *argv]) != 0
    assert "export engine" in capsys.readouterr().err
