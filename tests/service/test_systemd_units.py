"""The shipped unit, udev rule and example config: systemd's own analyzer, plus what the service relies on.

`systemd-analyze` (Debian/Ubuntu package `systemd`) verifies unit files offline: no running systemd (PID 1) is
needed, so this runs in CI containers.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from service_paths import REPO, require_tool

from device.config import load_config
from device.service.install import edgesort_executable, render_rule, render_unit

SYSTEMD = REPO / "systemd"
# Exposure score of `systemd-analyze security` times ten; the unit scores 1.8 today. A change that weakens the
# hardening beyond 2.5 fails here instead of going unnoticed.
MAX_EXPOSURE = 25


def _rendered_unit(tmp_path: Path) -> Path:
    # The shipped unit names /usr/local/bin/edgesort; verify checks that ExecStart= is executable, so it is
    # checked as install-service writes it: pointing at this installation's entry point.
    unit = tmp_path / "edgesort.service"
    text = (SYSTEMD / "edgesort.service").read_text()
    unit.write_text(render_unit(text, user="edgesort", executable=edgesort_executable()))
    return unit


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = require_tool("systemd-analyze")
    argv = [analyze, "verify", "--man=no", str(unit)]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    proc = _verify(_rendered_unit(tmp_path))
    # verify exits 0 on unknown keys and only warns: any output about the unit is a failure too.
    assert proc.returncode == 0 and "edgesort.service" not in proc.stderr + proc.stdout, proc.stderr


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    unit = _rendered_unit(tmp_path)
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    proc = _verify(unit)
    assert "Unknown key 'WatchdogSecs'" in proc.stderr


def test_hardening_exposure_stays_low(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    proc = subprocess.run(
        [analyze, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", str(_rendered_unit(tmp_path))],
        capture_output=True, text=True, check=False,
    )
    score = re.search(r"Overall exposure level for edgesort.service: ([0-9.]+)", proc.stdout)
    assert proc.returncode == 0 and score, proc.stdout[-2000:] + proc.stderr
    assert float(score.group(1)) * 10 <= MAX_EXPOSURE


def test_the_unit_says_what_the_daemon_relies_on() -> None:
    d = _directives((SYSTEMD / "edgesort.service").read_text())
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "Restart": ["on-failure"],
        "RestartPreventExitStatus": ["65 69 78"],  # device.service.ExitCode: DATAERR, UNAVAILABLE, CONFIG
        "User": ["edgesort"],
        "SupplementaryGroups": ["dialout video"],
        "StateDirectory": ["edgesort edgesort/engines edgesort/bundles"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "NoNewPrivileges": ["yes"],
        "DevicePolicy": ["closed"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
        "KillMode": ["mixed"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, key
    assert d["ExecStartPre"] == ["/usr/local/bin/edgesort check config /etc/edgesort/config.yaml"]
    assert d["ExecStart"] == ["/usr/local/bin/edgesort run --config /etc/edgesort/config.yaml"]
    assert d["LoadCredential"] == ["mqtt:/etc/edgesort/credentials"]
    for key in ("WatchdogSec", "TimeoutStartSec", "TimeoutStopSec", "StartLimitIntervalSec",
                "StartLimitBurst"):
        assert key in d, key
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    for dev in ("char-video4linux", "/dev/edgesort-mcu", "char-ttyUSB", "char-ttyACM", "char-nvhost",
                "/dev/nvmap", "char-nvidia*"):
        assert dev in allowed, dev
    # Globs work only on device groups: a path with a wildcard would silently allow nothing.
    assert not [a for a in allowed if a.startswith("/dev/") and any(c in a for c in "*?[")]


def test_udev_rule_names_the_mcu_by_serial_number() -> None:
    text = render_rule((SYSTEMD / "99-edgesort-mcu.rules").read_text(), serial="A9K3F1TQ")
    rules = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(rules) == 1
    pairs = re.findall(r'([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"', rules[0])
    assert ", ".join(f'{k}{op}"{v}"' for k, op, v in pairs) == rules[0].strip()  # nothing unparsed
    got = {(k, op): v for k, op, v in pairs}
    assert got[("SUBSYSTEM", "==")] == "tty"
    assert got[("ATTRS{serial}", "==")] == "A9K3F1TQ"
    assert got[("SYMLINK", "+=")] == "edgesort-mcu"
    assert got[("GROUP", "=")] == "dialout"


def test_example_config_is_valid() -> None:
    cfg = load_config(SYSTEMD / "config.yaml")
    assert cfg.paths.state_dir == Path("/var/lib/edgesort")
    assert cfg.cameras[0].uri.startswith("sim://")  # a fresh install starts on the digital twin


def test_state_layout_is_documented() -> None:
    readme = (SYSTEMD / "README.md").read_text()
    for path in ("/var/lib/edgesort/outbox.sqlite", "/var/lib/edgesort/engines/",
                 "/var/lib/edgesort/bundles/", "/etc/edgesort/config.yaml", "/etc/edgesort/credentials/",
                 "/dev/edgesort-mcu"):
        assert path in readme, path


@pytest.mark.parametrize("name", ["edgesort.service", "99-edgesort-mcu.rules", "config.yaml", "README.md"])
def test_shipped_files_exist(name: str) -> None:
    assert (SYSTEMD / name).is_file()


def test_exec_start_pre_accepts_the_example_config() -> None:
    """The unit's own ExecStartPre= command line, run on the shipped example config."""
    pre = _directives((SYSTEMD / "edgesort.service").read_text())["ExecStartPre"][0].split()
    assert pre[-1] == "/etc/edgesort/config.yaml"
    argv = [str(edgesort_executable()), *pre[1:-1], str(SYSTEMD / "config.yaml")]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
