import subprocess
import sys

HEAVY = ("torch", "torchvision", "onnxruntime", "cv2", "tensorrt", "pycuda")


def test_help_lists_every_subcommand_and_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from device.cli import build_parser\n"
        "text = build_parser().format_help()\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(text)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for cmd in ("demo", "run", "check", "bundle", "bench", "fleet", "bridge", "train", "export", "eval",
                "install-service"):
        assert cmd in out, f"subcommand {cmd} missing from --help"
    assert "HEAVY []" in out


def test_device_package_never_imports_torch_or_training_at_module_level():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^(import|from) (torch|torchvision|training|export)([ .]|$)", re.M)
    offenders = [str(p) for d in ("device", "firmware_bridge") for p in (root / d).rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


def test_a_command_error_is_one_sentence_and_an_exit_code(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bridge:\n  baud: fast\n")
    r = subprocess.run([sys.executable, "-m", "device.cli", "run", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 78
    assert "bridge.baud" in r.stderr and "Traceback" not in r.stderr
