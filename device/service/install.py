"""`edgesort install-service`: put the unit, the udev rule, the example config and the state layout in place.

Everything is planned first (a list of steps, each printed as one line) and then carried out, so
`--dry-run` shows exactly what a real run does. With `--prefix DIR` the files are staged under DIR (for an
image build or a package) and nothing on the host changes: no user is created, no daemon is reloaded.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from device.errors import EdgesortError

UNIT_NAME = "edgesort.service"
RULE_NAME = "99-edgesort-mcu.rules"
CONFIG_NAME = "config.yaml"
DEFAULT_BIN = "/usr/local/bin/edgesort"  # what the shipped unit names; replaced by the real path
SERIAL_PLACEHOLDER = "@MCU_SERIAL@"
STATE_SUBDIRS = ("engines", "bundles")  # the same list as StateDirectory= in the unit
GROUPS = ("dialout", "video")  # serial ports, cameras and (Jetson) GPU nodes
_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # useradd's portable user names
_SERIAL = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # anything else could break the udev rule's quoting


class InstallError(EdgesortError):
    """The service cannot be installed as asked."""

    exit_code = 73  # EX_CANTCREAT


def units_dir() -> Path:
    """Where the shipped unit files are: the source tree, or <prefix>/share/edgesort/systemd of an install."""
    candidates = [
        Path(__file__).resolve().parents[2] / "systemd",
        Path(sys.prefix) / "share" / "edgesort" / "systemd",
    ]
    for c in candidates:
        if (c / UNIT_NAME).is_file():
            return c
    raise InstallError(
        "cannot find the edgesort unit files (looked in " + ", ".join(str(c) for c in candidates) + ")"
    )


def edgesort_executable() -> Path:
    """The `edgesort` entry point of this installation (a venv's bin/, /usr/local/bin, ...)."""
    beside = Path(sys.executable).parent / "edgesort"
    if beside.is_file():
        return beside
    found = shutil.which("edgesort")
    if found:
        return Path(found)
    raise InstallError("cannot find the 'edgesort' executable of this installation; is it installed?")


@dataclass
class Step:
    what: str  # one line for the operator
    run: Callable[[], None]


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, run: Callable[[], None]) -> None:
        self.steps.append(Step(what, run))


def render_unit(text: str, *, user: str, executable: Path) -> str:
    text = text.replace(DEFAULT_BIN, str(executable))
    text = re.sub(r"^User=.*$", f"User={user}", text, flags=re.M)
    return re.sub(r"^Group=.*$", f"Group={user}", text, flags=re.M)


def render_rule(text: str, *, serial: str) -> str:
    return text.replace(SERIAL_PLACEHOLDER, serial)


def _ids(user: str) -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _write(path: Path, text: str, mode: int, owner: tuple[int, int] | None = None) -> Callable[[], None]:
    def run() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        if owner is not None:
            os.chown(tmp, *owner)
        tmp.replace(path)  # atomic: a half-written unit is never seen by systemd

    return run


def _mkdir(path: Path, mode: int, owner: tuple[int, int] | None = None) -> Callable[[], None]:
    def run() -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if owner is not None:
            os.chown(path, *owner)

    return run


def _command(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            detail = lines[-1] if lines else f"exit {proc.returncode}"
            raise InstallError(f"'{' '.join(argv)}' failed: {detail}")

    return run


def plan_install(
    prefix: Path,
    *,
    user: str = "edgesort",
    mcu_serial: str | None = None,
    executable: Path | None = None,
    source: Path | None = None,
) -> Plan:
    if not _NAME.match(user):
        raise InstallError(f"--user {user!r} is not a valid system user name (lower case, digits, '-', '_')")
    if mcu_serial is not None and not _SERIAL.match(mcu_serial):
        raise InstallError(f"--mcu-serial {mcu_serial!r} may hold only letters, digits and '_.:-'")
    src = source or units_dir()
    exe = (executable or edgesort_executable()).absolute()
    if exe.is_relative_to("/home") or exe.is_relative_to("/root"):
        raise InstallError(
            f"edgesort is installed under {exe.parent}, which ProtectHome=yes hides from the service; "
            "install it under /opt or /usr/local"
        )
    live = prefix.resolve() == Path("/")
    root = prefix.resolve()
    etc, state = root / "etc", root / "var/lib/edgesort"
    plan = Plan()

    owner = _ids(user)
    if live and owner is None:
        groups = [g for g in GROUPS if _group_exists(g)]
        argv = ["useradd", "--system", "--user-group", "--home-dir", "/var/lib/edgesort", "--no-create-home",
                "--shell", "/usr/sbin/nologin", "--comment", "edgesort daemon"]
        plan.add(f"create system user {user} (groups: {', '.join(groups) or 'none'})",
                 _command([*argv, *(["--groups", ",".join(groups)] if groups else []), user]))
    elif owner is None:
        plan.notes.append(f"user {user} does not exist on this host: staged files are owned by root; systemd "
                          "chowns the state directory at the first start")

    def ids() -> tuple[int, int] | None:
        return _ids(user)  # looked up when the step runs: the user may be created by an earlier step

    unit = render_unit((src / UNIT_NAME).read_text(), user=user, executable=exe)
    unit_path = etc / "systemd/system" / UNIT_NAME
    plan.add(f"write {unit_path}", _write(unit_path, unit, 0o644))

    rule_path = etc / "udev/rules.d" / RULE_NAME
    if mcu_serial:
        rule = render_rule((src / RULE_NAME).read_text(), serial=mcu_serial)
        plan.add(f"write {rule_path} (/dev/edgesort-mcu = USB serial {mcu_serial})",
                 _write(rule_path, rule, 0o644))
    else:
        plan.notes.append(
            "udev rule not installed: pass --mcu-serial SERIAL (udevadm info --query=property "
            "--name=/dev/ttyUSB0 | grep ID_SERIAL_SHORT) for a stable /dev/edgesort-mcu"
        )

    config_path = etc / "edgesort" / CONFIG_NAME
    if config_path.exists():
        plan.notes.append(f"kept the existing {config_path}")
    else:
        plan.add(f"write {config_path} (the digital twin; edit it for the real line)",
                 _chained(_write(config_path, (src / CONFIG_NAME).read_text(), 0o640),
                          lambda: _chgrp(config_path, user)))
    cred = etc / "edgesort/credentials"
    plan.add(f"create {cred}/ (root only; each file becomes the credential mqtt_<file>)", _mkdir(cred, 0o700))
    keys = etc / "edgesort/keys"
    plan.add(f"create {keys}/ (public keys for signed bundles and fleet commands)", _mkdir(keys, 0o755))

    for d in (state, *(state / s for s in STATE_SUBDIRS)):
        plan.add(f"create {d}/", _deferred_mkdir(d, 0o750, ids))

    if live:
        plan.add("systemctl daemon-reload", _optional_command(["systemctl", "daemon-reload"]))
        if mcu_serial:
            plan.add("udevadm control --reload-rules && udevadm trigger --subsystem-match=tty",
                     _chained(_optional_command(["udevadm", "control", "--reload-rules"]),
                              _optional_command(["udevadm", "trigger", "--subsystem-match=tty"])))
        plan.notes.append("start it: systemctl enable --now edgesort; watch it: journalctl -u edgesort -f")
    return plan


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _chgrp(path: Path, group: str) -> None:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return  # staged for another host: the group is made there
    os.chown(path, -1, gid)


def _chained(*runs: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        for r in runs:
            r()

    return run


def _deferred_mkdir(path: Path, mode: int, ids: Callable[[], tuple[int, int] | None]) -> Callable[[], None]:
    return lambda: _mkdir(path, mode, ids())()


class _Skipped(Exception):  # noqa: N818 (not an error: a step that does not apply)
    """A step that does not apply on this host (said in one line, not an error)."""


def _optional_command(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        if shutil.which(argv[0]) is None:
            raise _Skipped(f"{argv[0]} is not installed here (no systemd/udev on this host?)")
        _command(argv)()

    return run


def install_service(
    prefix: Path,
    *,
    user: str = "edgesort",
    mcu_serial: str | None = None,
    dry_run: bool = False,
    executable: Path | None = None,
    out: Callable[[str], None] = print,
) -> int:
    live = prefix.resolve() == Path("/")
    if live and not dry_run and os.geteuid() != 0:
        raise InstallError("install-service writes to /etc and /var/lib: run it as root, or stage the files "
                           "with --prefix DIR")
    plan = plan_install(prefix, user=user, mcu_serial=mcu_serial, executable=executable)
    for step in plan.steps:
        out(("would " if dry_run else "") + step.what)
        if not dry_run:
            try:
                step.run()
            except _Skipped as why:
                out(f"  skipped: {why}")
            except OSError as exc:
                raise InstallError(f"{step.what}: {exc.strerror or exc}") from exc
    for note in plan.notes:
        out(f"note: {note}")
    return 0
