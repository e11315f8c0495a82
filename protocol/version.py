"""The installed storelink version, reported in status messages and API documents."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["SOFTWARE_VERSION"]

try:
    SOFTWARE_VERSION = version("storelink")
except PackageNotFoundError:  # running from a source tree that was never installed
    SOFTWARE_VERSION = "0+unknown"
