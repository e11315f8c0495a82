"""Tests for protocol.topics: builders, filters and parse_topic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import topics
from protocol.errors import DecodeError, InvalidSnapshotKind, InvalidStoreId
from protocol.ids import STORE_ID_PATTERN
from protocol.topics import SnapshotKind, Topic, TopicKind, parse_topic

_BUILDERS: list[tuple[Callable[[str], str], str, TopicKind]] = [
    (topics.status, "storelink/v1/s1/status", TopicKind.STATUS),
    (topics.up_events, "storelink/v1/s1/up/events", TopicKind.UP_EVENTS),
    (topics.up_cmd_result, "storelink/v1/s1/up/cmd-result", TopicKind.UP_CMD_RESULT),
    (topics.up_rpc, "storelink/v1/s1/up/rpc", TopicKind.UP_RPC),
    (topics.down_ack, "storelink/v1/s1/down/ack", TopicKind.DOWN_ACK),
    (topics.down_resend, "storelink/v1/s1/down/resend", TopicKind.DOWN_RESEND),
    (topics.down_cmd, "storelink/v1/s1/down/cmd", TopicKind.DOWN_CMD),
    (topics.down_rpc, "storelink/v1/s1/down/rpc", TopicKind.DOWN_RPC),
]


@pytest.mark.parametrize(("builder", "expected", "kind"), _BUILDERS)
def test_builders_and_round_trip(builder: Callable[[str], str], expected: str, kind: TopicKind) -> None:
    assert builder("s1") == expected
    parsed = parse_topic(expected)
    assert parsed == Topic("s1", kind)
    assert str(parsed) == expected


def test_status_round_trip_from_the_brief() -> None:
    assert parse_topic(topics.status("s1")) == Topic("s1", TopicKind.STATUS)


@pytest.mark.parametrize("kind", list(SnapshotKind))
def test_snapshot_topics_round_trip(kind: SnapshotKind) -> None:
    topic = topics.down_snapshot("store-7", kind)
    assert topic == f"storelink/v1/store-7/down/snapshot/{kind.value}"
    assert topics.down_snapshot("store-7", kind.value) == topic
    parsed = parse_topic(topic)
    assert parsed == Topic("store-7", TopicKind.DOWN_SNAPSHOT, kind)
    assert str(parsed) == topic


def test_snapshot_kinds_are_the_designed_ones() -> None:
    assert [k.value for k in SnapshotKind] == [
        "catalog",
        "prices",
        "promotions",
        "staff",
        "settings",
    ]


@pytest.mark.parametrize("kind", ["menu", "", "Catalog", "catalog/x", 3])
def test_down_snapshot_rejects_unknown_kind(kind: Any) -> None:
    with pytest.raises(InvalidSnapshotKind, match="unknown snapshot kind"):
        topics.down_snapshot("s1", kind)


_ALL_BUILDERS: list[Callable[[str], str]] = [
    *(builder for builder, _, _ in _BUILDERS),
    topics.store_prefix,
    topics.store_filter,
    topics.down_filter,
    lambda store: topics.down_snapshot(store, SnapshotKind.PRICES),
]


@pytest.mark.parametrize("builder", _ALL_BUILDERS)
@pytest.mark.parametrize("store", ["", "Foo!", "+", "#", "s1/x", "-s1", "a" * 33])
def test_every_builder_validates_the_store(builder: Callable[[str], str], store: str) -> None:
    with pytest.raises(InvalidStoreId):
        builder(store)


def test_filters_and_prefixes() -> None:
    assert topics.ROOT == "storelink/v1"
    assert topics.store_prefix("s1") == "storelink/v1/s1/"
    assert topics.store_filter("s1") == "storelink/v1/s1/#"
    assert topics.down_filter("s1") == "storelink/v1/s1/down/#"
    assert topics.ALL_STATUS == "storelink/v1/+/status"
    assert topics.ALL_UP == "storelink/v1/+/up/#"
    assert topics.ACL_PATTERN == "storelink/v1/%u/#"
    assert topics.shared(topics.ALL_UP) == "$share/storelink-hub/storelink/v1/+/up/#"
    assert topics.shared(topics.ALL_STATUS, "g2") == "$share/g2/storelink/v1/+/status"


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_shared_rejects_bad_group(group: str) -> None:
    with pytest.raises(ValueError, match="shared subscription group"):
        topics.shared(topics.ALL_UP, group)


def test_topic_kind_direction_and_retain() -> None:
    from_edge = {kind for kind in TopicKind if kind.from_edge}
    assert from_edge == {
        TopicKind.STATUS,
        TopicKind.UP_EVENTS,
        TopicKind.UP_CMD_RESULT,
        TopicKind.UP_RPC,
    }
    assert {kind for kind in TopicKind if kind.retained} == {
        TopicKind.STATUS,
        TopicKind.DOWN_SNAPSHOT,
    }


def test_topic_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="snapshot kind is required"):
        Topic("s1", TopicKind.DOWN_SNAPSHOT)
    with pytest.raises(ValueError, match="snapshot kind is required"):
        Topic("s1", TopicKind.STATUS, SnapshotKind.STAFF)
    with pytest.raises(InvalidStoreId):
        Topic("Bad", TopicKind.STATUS)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("storelink/v2/s1/status", "is not under 'storelink/v1/'"),
        ("other/v1/s1/status", "is not under"),
        ("storelink/v1", "is not under"),
        ("/storelink/v1/s1/status", "is not under"),
        ("$share/storelink-hub/storelink/v1/s1/status", "is not under"),
        ("storelink/v1/Foo!/status", "invalid store id 'Foo!'"),
        ("storelink/v1//status", "invalid store id ''"),
        ("storelink/v1/+/status", "invalid store id '+'"),
        ("storelink/v1/s1", "unknown topic ''"),
        ("storelink/v1/s1/", "unknown topic ''"),
        ("storelink/v1/s1/up", "unknown topic 'up'"),
        ("storelink/v1/s1/up/orders", "unknown topic 'up/orders'"),
        ("storelink/v1/s1/status/extra", "unknown topic 'status/extra'"),
        ("storelink/v1/s1/up/events/", "unknown topic 'up/events/'"),
        ("storelink/v1/s1/down/ack/x", "unknown topic 'down/ack/x'"),
        ("storelink/v1/s1/down/snapshot", "needs a kind"),
        ("storelink/v1/s1/down/snapshot/", "unknown snapshot kind ''"),
        ("storelink/v1/s1/down/snapshot/menu", "unknown snapshot kind 'menu'"),
        ("storelink/v1/s1/down/snapshot/prices/x", "unknown snapshot kind 'prices/x'"),
        ("storelink/v1/s1/STATUS", "unknown topic 'STATUS'"),
    ],
)
def test_parse_topic_rejects(topic: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_topic(topic)
    assert info.value.what == "topic"
    assert reason in info.value.reason
    assert str(info.value).startswith("cannot decode topic: ")


def test_parse_topic_bad_store_reason_carries_the_store_id_message() -> None:
    with pytest.raises(DecodeError) as info:
        parse_topic("storelink/v1/Foo!/status")
    assert "use 1-32 characters a-z, 0-9 and '-', starting with a letter or digit" in (info.value.reason)


@pytest.mark.parametrize("topic", [None, b"storelink/v1/s1/status", 5])
def test_parse_topic_rejects_non_str(topic: Any) -> None:
    with pytest.raises(DecodeError, match="expected a str"):
        parse_topic(topic)


_stores = st.from_regex(STORE_ID_PATTERN, fullmatch=True)


@given(_stores, st.sampled_from(_BUILDERS))
def test_parse_inverts_every_builder(store: str, case: tuple[Callable[[str], str], str, TopicKind]) -> None:
    builder, _, kind = case
    assert parse_topic(builder(store)) == Topic(store, kind)


@given(st.text(max_size=80))
def test_parse_topic_only_raises_decode_error(topic: str) -> None:
    try:
        parsed = parse_topic(topic)
    except DecodeError:
        return
    assert str(parsed) == topic
