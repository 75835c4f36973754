"""The ``tickforge`` command: ``run | features | sim | record | replay``.

Each subcommand lives in the module that does the work, which provides
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen command's module is imported,
so ``tickforge features`` never loads the websocket stack and ``--help`` is instant.
Errors a user can fix (bad input, bad config, no GPU) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from engine import __version__
from engine.errors import TickforgeError

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("engine.live", "run the live engine (embedded exchange and paper broker unless credentials are set)"),
    "features": ("engine.batch", "recompute indicator features from Parquet bars into Parquet"),
    "sim": ("engine.sim.server", "serve the embedded exchange and paper broker on localhost"),
    "record": ("engine.marketdata.recorder", "record a market data stream to a compressed JSON-lines file"),
    "replay": ("engine.marketdata.replay", "replay a recording through the decoder and book"),
    "halt": ("engine.control", "engage a running engine's kill switch (POST /halt on its metrics port)"),
}


def _parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickforge", description="GPU-accelerated batch-and-stream engine for trading.")
    parser.add_argument("--version", action="version", version=f"tickforge {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = _parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.log_level != "DEBUG":
        for chatty in ("httpx", "httpcore", "websockets", "distributed", "numba"):
            logging.getLogger(chatty).setLevel(logging.WARNING)  # per-request lines drown the engine's own
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except TickforgeError as exc:
        print(f"tickforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tickforge {args.command}: interrupted", file=sys.stderr)
        return 130
