"""Tests for protocol.ids: UUIDv7 layout and ordering, store id validation."""

from __future__ import annotations

import itertools
import pickle
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from protocol import ids
from protocol.errors import InvalidStoreId, ProtocolError
from protocol.ids import StoreId, id_timestamp, new_id, validate_store_id


def test_new_id_has_version_7_and_rfc_variant() -> None:
    for _ in range(100):
        value = new_id()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 0x7
        assert (value.int >> 62) & 0b11 == 0b10


def test_new_id_is_strictly_increasing_over_10k_ids() -> None:
    values = [new_id() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(values))
    # Byte order must agree too: databases compare UUIDs as 16 raw bytes.
    assert all(a.bytes < b.bytes for a, b in itertools.pairwise(values))
    assert str(values[0]) < str(values[-1])
    assert len(set(values)) == len(values)


@pytest.fixture
def fresh_generator(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Start the id generator from scratch; monkeypatch restores the real state afterwards."""
    monkeypatch.setattr(ids, "_last_ms", -1)
    monkeypatch.setattr(ids, "_counter", 0)
    return monkeypatch


def test_new_id_within_one_millisecond_counts_then_borrows_the_next(
    fresh_generator: pytest.MonkeyPatch,
) -> None:
    frozen_ms = 1_700_000_000_000
    fresh_generator.setattr(ids, "_now_ms", lambda: frozen_ms)
    values = [new_id() for _ in range(5_000)]
    assert all(a < b for a, b in itertools.pairwise(values))
    stamps = [value.int >> 80 for value in values]
    assert stamps[0] == frozen_ms
    # 5000 ids cannot all fit in one millisecond's 12-bit counter, and the overflow must
    # move into the following millisecond rather than wrap around.
    assert stamps[-1] in (frozen_ms + 1, frozen_ms + 2)
    assert stamps == sorted(stamps)


def test_new_id_stays_increasing_when_the_clock_steps_back(
    fresh_generator: pytest.MonkeyPatch,
) -> None:
    now = [1_700_000_000_000]
    fresh_generator.setattr(ids, "_now_ms", lambda: now[0])
    before = new_id()
    now[0] -= 60_000
    after = new_id()
    assert after > before
    now[0] += 120_000
    later = new_id()
    assert later > after
    assert later.int >> 80 == now[0]


def test_new_id_is_unique_and_ordered_across_threads() -> None:
    results: list[list[uuid.UUID]] = [[] for _ in range(8)]

    def worker(out: list[uuid.UUID]) -> None:
        out.extend(new_id() for _ in range(2_000))

    threads = [threading.Thread(target=worker, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [value for out in results for value in out]
    assert len(set(everything)) == len(everything)
    for out in results:
        assert out == sorted(out)


def test_id_timestamp_is_close_to_now() -> None:
    before = datetime.now(UTC)
    stamp = id_timestamp(new_id())
    after = datetime.now(UTC)
    assert stamp.tzinfo is not None
    assert stamp.utcoffset() == timedelta(0)
    # The id keeps milliseconds only, so allow for truncation below `before`.
    assert before - timedelta(milliseconds=1) <= stamp <= after


def test_id_timestamp_decodes_known_value() -> None:
    # Example from RFC 9562 appendix A.6: 017F22E2-79B0-7CC3-98C4-DC0C0C07398F.
    value = uuid.UUID("017F22E2-79B0-7CC3-98C4-DC0C0C07398F")
    assert id_timestamp(value) == datetime(2022, 2, 22, 19, 22, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        uuid.uuid4(),
        uuid.uuid1(),
        uuid.UUID(int=0),
        uuid.UUID("017f22e2-79b0-7cc3-08c4-dc0c0c07398f"),
    ],
)
def test_id_timestamp_rejects_other_versions(value: uuid.UUID) -> None:
    with pytest.raises(ValueError, match="not a version 7 UUID"):
        id_timestamp(value)


@pytest.mark.parametrize(
    "value",
    ["s1", "0", "store-001", "a" * 32, "9-", "shanghai-jingan-03"],
)
def test_validate_store_id_accepts(value: str) -> None:
    assert validate_store_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "-s1", "S1", "Foo!", "a" * 33, "s 1", "s/1", "s+", "s#", "s1\n", "é", "s_1", "ｓ1"],
)
def test_validate_store_id_rejects(value: str) -> None:
    with pytest.raises(InvalidStoreId) as info:
        validate_store_id(value)
    assert repr(value) in str(info.value)
    assert "use 1-32 characters a-z, 0-9 and '-'" in str(info.value)


@pytest.mark.parametrize("value", [None, 1, b"s1", ["s1"]])
def test_validate_store_id_rejects_non_str(value: Any) -> None:
    with pytest.raises(InvalidStoreId):
        validate_store_id(value)


def test_invalid_store_id_message_and_hierarchy() -> None:
    with pytest.raises(InvalidStoreId) as info:
        validate_store_id("Foo!")
    assert str(info.value) == (
        "invalid store id 'Foo!': use 1-32 characters a-z, 0-9 and '-', starting with a letter or digit"
    )
    assert isinstance(info.value, ProtocolError)
    assert isinstance(info.value, ValueError)
    clone = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - our own object
    assert str(clone) == str(info.value)


@given(st.from_regex(ids.STORE_ID_PATTERN, fullmatch=True))
def test_every_pattern_match_is_valid(value: str) -> None:
    assert validate_store_id(value) == value


class _HasStore(BaseModel):
    store: StoreId


def test_store_id_type_validates_in_models() -> None:
    assert _HasStore(store="s1").store == "s1"
    with pytest.raises(ValidationError, match="invalid store id 'Bad'"):
        _HasStore(store="Bad")
