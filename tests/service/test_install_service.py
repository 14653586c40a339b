"""`edgesort install-service` staged under --prefix: the real command line and files; the host untouched."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from service_paths import REPO

from device.service.install import InstallError, install_service, plan_install

EDGESORT = REPO / ".venv" / "bin" / "edgesort"


def _edgesort(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    exe = str(EDGESORT) if EDGESORT.exists() else "edgesort"
    return subprocess.run([*prefix, exe, *args], capture_output=True, text=True, check=False, timeout=120)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_install_under_a_prefix(tmp_path: Path) -> None:
    proc = _edgesort("install-service", "--prefix", str(tmp_path), "--user", "sorter",
                     "--mcu-serial", "A9K3F1TQ")
    assert proc.returncode == 0, proc.stderr
    unit = (tmp_path / "etc/systemd/system/edgesort.service").read_text()
    assert "\nUser=sorter\n" in unit and "\nGroup=sorter\n" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    exe = Path(exec_start.split("=", 1)[1].split()[0])
    assert exe.name == "edgesort" and os.access(exe, os.X_OK)  # this installation's entry point
    rule = (tmp_path / "etc/udev/rules.d/99-edgesort-mcu.rules").read_text()
    assert 'ATTRS{serial}=="A9K3F1TQ"' in rule and "@MCU_SERIAL@" not in rule
    config = tmp_path / "etc/edgesort/config.yaml"
    assert config.read_text() == (REPO / "systemd/config.yaml").read_text() and _mode(config) == 0o640
    assert _mode(tmp_path / "etc/edgesort/credentials") == 0o700
    for d in ("", "engines", "bundles"):
        assert _mode(tmp_path / "var/lib/edgesort" / d) == 0o750
    assert "systemctl" not in proc.stdout  # a staged install touches nothing on the host
    assert all(line for line in proc.stdout.splitlines())  # one line per step


def test_existing_config_is_kept(tmp_path: Path) -> None:
    config = tmp_path / "etc/edgesort/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("device: {id: line-7}\n")
    assert install_service(tmp_path, out=lambda s: None) == 0
    assert config.read_text() == "device: {id: line-7}\n"


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    assert install_service(tmp_path, dry_run=True, out=lines.append) == 0
    assert list(tmp_path.iterdir()) == []
    assert lines and all(line.startswith(("would ", "note: ")) for line in lines)
    assert any("edgesort.service" in line for line in lines)


def test_without_serial_the_rule_is_skipped_with_a_hint(tmp_path: Path) -> None:
    lines: list[str] = []
    install_service(tmp_path, out=lines.append)
    assert not (tmp_path / "etc/udev/rules.d/99-edgesort-mcu.rules").exists()
    assert any("--mcu-serial" in line and "ID_SERIAL_SHORT" in line for line in lines)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"user": "Root Admin"}, "not a valid system user name"),
        ({"mcu_serial": 'x", RUN+="/bin/sh'}, "may hold only"),
        ({"executable": Path("/home/ana/venv/bin/edgesort")}, "ProtectHome"),
    ],
)
def test_bad_requests_are_refused_in_one_sentence(
    tmp_path: Path, kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(InstallError, match=words) as err:
        plan_install(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_live_install_needs_root() -> None:
    as_user: tuple[str, ...] = ()
    if os.geteuid() == 0:  # CI containers run as root: drop to nobody to see what an operator would see
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot run as another user")
        as_user = (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")
    proc = _edgesort("install-service", prefix=as_user)
    assert proc.returncode == InstallError.exit_code
    assert "run it as root" in proc.stderr


def test_live_dry_run_plans_the_user_and_the_reloads() -> None:
    lines: list[str] = []
    install_service(Path("/"), user="edgesort-test-nonexistent", mcu_serial="A1", dry_run=True,
                    out=lines.append)
    text = "\n".join(lines)
    assert "would create system user edgesort-test-nonexistent" in text
    assert "would systemctl daemon-reload" in text
    assert "would udevadm control --reload-rules" in text
