"""The one base exception of the drivers package."""


class DriverError(Exception):
    """A device could not do what was asked; the message says which device and what to do."""
