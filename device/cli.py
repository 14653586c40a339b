"""The `edgesort` command line.

Subcommands are plugins found through the `edgesort.commands` entry-point group (pyproject.toml), so that this
module never imports training/ or export/ by name. Each plugin module exposes `register(subparsers)`, which adds
one subparser and sets `func` on it; `func(args) -> int` is the exit code. Registration must stay light: heavy
libraries (torch, onnxruntime, cv2) are imported inside `func`, never at module level.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from device import __version__
from device.errors import EdgesortError

log = logging.getLogger("edgesort")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgesort",
        description="Camera-based sorting appliance: train, export, and run models on a conveyor.",
    )
    parser.add_argument("--version", action="version", version=f"edgesort {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group="edgesort.commands"), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # a plugin whose package is absent from this install
            log.debug("subcommand %s unavailable: %s", ep.name, exc)
            continue
        register(sub)
    return parser


def setup_logging(verbosity: int) -> None:
    """One line per event on stderr (journald adds its own timestamps under systemd); -v for debug."""
    from device.service.journal import formatter_for

    level = logging.DEBUG if verbosity else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(sys.stderr))  # journald priorities when stderr is the journal
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgesortError as exc:
        print(f"edgesort {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
