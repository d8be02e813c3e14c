"""Subcommands of the `stylize` CLI: each module has register(subparsers) and sets args.func. Argument parsing and
printing only: the work is in the SDK, the server, the build and the measurement packages."""
