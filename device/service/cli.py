"""`edgesort install-service`: the systemd unit, the udev rule, the example config and the state layout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "install-service",
        help="install the systemd service, the MCU udev rule and /var/lib/edgesort",
        description="Install edgesort as a systemd service (docs/SERVICE.md). Run as root; with --prefix the "
        "files are staged under a directory instead and nothing on this host changes.",
    )
    p.add_argument("--prefix", type=Path, default=Path("/"), help="root to install under (default: /)")
    p.add_argument("--user", default="edgesort", help="system user the daemon runs as (default: edgesort)")
    p.add_argument("--mcu-serial", metavar="SERIAL",
                   help="USB serial number of the MCU board: installs the udev rule for /dev/edgesort-mcu")
    p.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from device.service.install import install_service

    return install_service(args.prefix, user=args.user, mcu_serial=args.mcu_serial, dry_run=args.dry_run)
