"""Subcommands of `edgesort` that belong to the device. Each module has `register(subparsers)`."""
