"""Exceptions raised by the protocol package."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error raised by the protocol package."""


class InvalidStoreId(ProtocolError, ValueError):
    """A store id does not match the store id pattern."""

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(
            f"invalid store id {value!r}: use 1-32 characters a-z, 0-9 and '-',"
            " starting with a letter or digit"
        )

    def __reduce__(self) -> tuple[type[InvalidStoreId], tuple[object]]:
        return (type(self), (self.value,))


class InvalidSnapshotKind(ProtocolError, ValueError):
    """A snapshot kind is not one of the known kinds."""

    def __init__(self, value: object, known: tuple[str, ...]) -> None:
        self.value = value
        self.known = known
        super().__init__(f"unknown snapshot kind {value!r}: use one of {', '.join(known)}")

    def __reduce__(self) -> tuple[type[InvalidSnapshotKind], tuple[object, tuple[str, ...]]]:
        return (type(self), (self.value, self.known))


class DecodeError(ProtocolError):
    """A payload or topic received from the wire could not be decoded."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"cannot decode {what}: {reason}")

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str]]:
        return (type(self), (self.what, self.reason))
