"""`python -m drivers sim-printers N`: simulated network ESC/POS printers for the demo.

Prints one line per printer, `printer <n> 127.0.0.1:<port>`, then serves until SIGINT or
SIGTERM. The demo registers them with `storelink-edge devices add`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from drivers.sim import SimNetworkPrinter


async def _serve(count: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for n in range(count):
            printer = await stack.enter_async_context(SimNetworkPrinter())
            print(f"printer {n} 127.0.0.1:{printer.port}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m drivers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sims = sub.add_parser("sim-printers", help="run simulated network printers")
    sims.add_argument("count", type=int, nargs="?", default=1, choices=range(1, 9), metavar="N (1-8)")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.count))


if __name__ == "__main__":
    main()
