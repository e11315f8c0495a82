"""MQTT topic names under storelink/v1/{store}/: builders, filters and a parser."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import DecodeError, InvalidSnapshotKind, InvalidStoreId
from protocol.ids import validate_store_id

__all__ = [
    "ACL_PATTERN",
    "ALL_STATUS",
    "ALL_UP",
    "HUB_GROUP",
    "QOS",
    "ROOT",
    "SnapshotKind",
    "Topic",
    "TopicKind",
    "down_ack",
    "down_cmd",
    "down_filter",
    "down_resend",
    "down_rpc",
    "down_snapshot",
    "parse_topic",
    "shared",
    "status",
    "store_filter",
    "store_prefix",
    "up_cmd_result",
    "up_events",
    "up_rpc",
]

ROOT = "storelink/v1"
QOS = 1
HUB_GROUP = "storelink-hub"

ALL_STATUS = f"{ROOT}/+/status"
ALL_UP = f"{ROOT}/+/up/#"
# Mosquitto substitutes %u with the client's username, which is the store id.
ACL_PATTERN = f"{ROOT}/%u/#"


class SnapshotKind(StrEnum):
    """Kinds of retained, versioned snapshots the hub publishes to a store."""

    CATALOG = "catalog"
    PRICES = "prices"
    PROMOTIONS = "promotions"
    STAFF = "staff"
    SETTINGS = "settings"


class TopicKind(StrEnum):
    """The topics under a store's root, by their path below the store id."""

    STATUS = "status"
    UP_EVENTS = "up/events"
    UP_CMD_RESULT = "up/cmd-result"
    UP_RPC = "up/rpc"
    DOWN_ACK = "down/ack"
    DOWN_RESEND = "down/resend"
    DOWN_SNAPSHOT = "down/snapshot"
    DOWN_CMD = "down/cmd"
    DOWN_RPC = "down/rpc"

    @property
    def from_edge(self) -> bool:
        """True for topics the edge publishes and the hub consumes."""
        return self is TopicKind.STATUS or self.value.startswith("up/")

    @property
    def retained(self) -> bool:
        """True for topics published with the retain flag."""
        return self in (TopicKind.STATUS, TopicKind.DOWN_SNAPSHOT)


_SNAPSHOT_KINDS = tuple(kind.value for kind in SnapshotKind)


def _snapshot_kind(kind: SnapshotKind | str) -> SnapshotKind:
    try:
        return SnapshotKind(kind)
    except ValueError:
        raise InvalidSnapshotKind(kind, _SNAPSHOT_KINDS) from None


@dataclass(frozen=True)
class Topic:
    """A parsed storelink topic; str() gives the topic string back."""

    store: str
    kind: TopicKind
    snapshot: SnapshotKind | None = None

    def __post_init__(self) -> None:
        validate_store_id(self.store)
        if (self.kind is TopicKind.DOWN_SNAPSHOT) != (self.snapshot is not None):
            raise ValueError("a snapshot kind is required for down/snapshot and only there")

    def __str__(self) -> str:
        if self.snapshot is not None:
            return down_snapshot(self.store, self.snapshot)
        return _build(self.store, self.kind)


def _build(store: str, kind: TopicKind) -> str:
    return f"{ROOT}/{validate_store_id(store)}/{kind.value}"


def store_prefix(store: str) -> str:
    """Return "storelink/v1/{store}/", the prefix of every topic of a store."""
    return f"{ROOT}/{validate_store_id(store)}/"


def store_filter(store: str) -> str:
    """Return "storelink/v1/{store}/#", the filter (and ACL pattern) for one store."""
    return store_prefix(store) + "#"


def down_filter(store: str) -> str:
    """Return the filter an edge subscribes to for everything the hub sends it."""
    return store_prefix(store) + "down/#"


def shared(filter_: str, group: str = HUB_GROUP) -> str:
    """Return a shared-subscription filter so hub instances split the load."""
    if not group or any(c in group for c in "/+#"):
        raise ValueError(f"invalid shared subscription group {group!r}")
    return f"$share/{group}/{filter_}"


def status(store: str) -> str:
    """Topic of a store's retained status (and Last Will)."""
    return _build(store, TopicKind.STATUS)


def up_events(store: str) -> str:
    """Topic of a store's outbox event batches."""
    return _build(store, TopicKind.UP_EVENTS)


def up_cmd_result(store: str) -> str:
    """Topic of a store's command results."""
    return _build(store, TopicKind.UP_CMD_RESULT)


def up_rpc(store: str) -> str:
    """Topic of a store's RPC requests to the hub."""
    return _build(store, TopicKind.UP_RPC)


def down_ack(store: str) -> str:
    """Topic of the hub's acknowledgements of committed events."""
    return _build(store, TopicKind.DOWN_ACK)


def down_resend(store: str) -> str:
    """Topic of the hub's resend requests."""
    return _build(store, TopicKind.DOWN_RESEND)


def down_snapshot(store: str, kind: SnapshotKind | str) -> str:
    """Topic of one retained snapshot kind for a store."""
    return f"{_build(store, TopicKind.DOWN_SNAPSHOT)}/{_snapshot_kind(kind).value}"


def down_cmd(store: str) -> str:
    """Topic of commands from the hub to a store."""
    return _build(store, TopicKind.DOWN_CMD)


def down_rpc(store: str) -> str:
    """Topic of the hub's RPC replies to a store."""
    return _build(store, TopicKind.DOWN_RPC)


_KINDS_BY_PATH = {kind.value: kind for kind in TopicKind}
_ROOT_PREFIX = ROOT + "/"


def parse_topic(topic: str) -> Topic:
    """Parse a topic string into a Topic, raising DecodeError if it is not ours."""
    if not isinstance(topic, str):
        raise DecodeError("topic", f"expected a str, not {type(topic).__name__}")
    if not topic.startswith(_ROOT_PREFIX):
        raise DecodeError("topic", f"{topic!r} is not under {_ROOT_PREFIX!r}")
    store, _, path = topic[len(_ROOT_PREFIX) :].partition("/")
    try:
        validate_store_id(store)
    except InvalidStoreId as err:
        raise DecodeError("topic", f"{topic!r}: {err}") from None
    kind = _KINDS_BY_PATH.get(path)
    if kind is not None and kind is not TopicKind.DOWN_SNAPSHOT:
        return Topic(store, kind)
    snapshot_prefix = TopicKind.DOWN_SNAPSHOT.value + "/"
    if path.startswith(snapshot_prefix):
        try:
            snapshot = _snapshot_kind(path[len(snapshot_prefix) :])
        except InvalidSnapshotKind as err:
            raise DecodeError("topic", f"{topic!r}: {err}") from None
        return Topic(store, TopicKind.DOWN_SNAPSHOT, snapshot)
    if kind is TopicKind.DOWN_SNAPSHOT:
        raise DecodeError("topic", f"{topic!r}: down/snapshot needs a kind level")
    raise DecodeError(
        "topic",
        f"{topic!r}: unknown topic {path!r} under the store; expected one of {', '.join(_KINDS_BY_PATH)}",
    )
