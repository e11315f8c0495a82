"""Store hardware: pure protocol cores (keymaps, receipt layout, scale frames) and thin transports."""

from drivers.errors import DriverError

__all__ = ["DriverError"]
