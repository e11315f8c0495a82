#!/usr/bin/env python3
"""Set up storelink's virtual environment and run the demo, the tests or the benchmarks.

Needs only Python 3.11+: the first run creates `.venv/`, installs storelink with the pinned
versions from `constraints.txt`, and later runs reinstall only when those files change.

    python3 dev.py demo     # hub + embedded broker + SQLite + one simulated store
    python3 dev.py test     # ruff, mypy and the whole test suite
    python3 dev.py bench    # benchmarks, table written to docs/benchmarks.md
    python3 dev.py bench sync rfm   # only those groups; their sections are replaced
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".storelink-installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
INPUTS = ("pyproject.toml", "constraints.txt")


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in INPUTS:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _run(*argv: str | Path) -> None:
    result = subprocess.run([str(a) for a in argv], cwd=ROOT, check=False)
    if result.returncode:
        sys.exit(result.returncode)


def ensure_venv() -> None:
    """Create and fill the virtual environment unless it is already up to date."""
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    want = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    print("installing storelink and its pinned dependencies", flush=True)
    quiet = ["-q"]
    _run(PY, "-m", "pip", "install", *quiet, "--upgrade", "pip")
    _run(PY, "-m", "pip", "install", *quiet, "-c", "constraints.txt", "-e", ".[dev]")
    STAMP.write_text(want)


def cmd_test(extra: list[str]) -> None:
    """Lint, type-check, then run the test suite; stop at the first failing step."""
    _run(PY, "-m", "ruff", "check", ".")
    _run(PY, "-m", "ruff", "format", "--check", ".")
    _run(PY, "-m", "mypy", "protocol", "drivers", "edge", "hub", "tests")
    # Most tests wait on brokers, databases and subprocesses rather than the CPU, so two
    # workers (pytest-xdist) finish the suite in about half the time even on two cores.
    workers = [] if any(arg.startswith(("-n", "--numprocesses")) for arg in extra) else ["-n", "2"]
    _run(PY, "-m", "pytest", *workers, *extra)


def main() -> None:
    commands = {"demo", "test", "bench", "setup"}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(sorted(commands))}}} [args...]")
    command, extra = sys.argv[1], sys.argv[2:]
    ensure_venv()
    if command == "test":
        cmd_test(extra)
    elif command == "demo":
        os.execv(BIN / "storelink-hub", [str(BIN / "storelink-hub"), "demo", *extra])  # noqa: S606
    elif command == "bench":
        _run(PY, "-m", "tests.bench", *extra)


if __name__ == "__main__":
    main()
