"""`storelink-edge`: run the store daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from edge import daemon
from edge.config import EdgeSettings
from edge.errors import EdgeError
from protocol import ConfigError, load_settings

__all__ = ["main"]


def cmd_run(args: argparse.Namespace) -> None:
    """Start the daemon until SIGINT/SIGTERM."""
    settings = load_settings(EdgeSettings, args.config)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(daemon.run(settings))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storelink-edge", description=__doc__)
    parser.add_argument("--config", type=Path, help="edge.toml (every setting also from STORELINK_* env)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the store daemon").set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `storelink-edge`."""
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        pass
    except (ConfigError, EdgeError) as err:
        print(f"storelink-edge: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # e.g. the API port is taken, the state directory is read-only
        print(f"storelink-edge: cannot start: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
