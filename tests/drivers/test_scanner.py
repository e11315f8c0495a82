"""ScanDecoder fed with real evdev InputEvent sequences: scanner and auto modes, terminators, limits."""

from __future__ import annotations

import pytest
from evdev import InputEvent, ecodes
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.keymap import GS
from drivers.scanner import (
    TAB,
    AimId,
    OutcomeQueue,
    Rejection,
    RejectReason,
    Scan,
    ScanDecoder,
    ScanMode,
    ScannerUnavailable,
    parse_aim,
)
from tests.drivers.keyseq import TYPABLE, chord, event, tap, typed

T0 = 1_700_000_000.0


def _only_scan(outcomes) -> Scan:
    assert len(outcomes) == 1, outcomes
    assert isinstance(outcomes[0], Scan), outcomes
    return outcomes[0]


def test_scanner_mode_reads_a_line_with_timestamps():
    events = typed("4006381333931\n", start=T0, gap=0.003)
    scan = _only_scan(ScanDecoder().feed_all(events))
    assert scan.text == "4006381333931"
    assert scan.started == pytest.approx(T0)
    assert scan.ended == pytest.approx(T0 + 13 * 0.003)
    assert scan.aim is None


def test_shifted_symbols_and_mixed_case():
    text = "Ab-_=+[{]}\\|;:'\"`~,<.>/?!@#$%^&*() z"
    assert _only_scan(ScanDecoder().feed_all(typed(text + "\n"))).text == text


def test_caps_lock_on_the_scanner_inverts_letters_only():
    events = [*tap(T0 - 1, ecodes.KEY_CAPSLOCK), *typed("abC12-\n")]
    assert _only_scan(ScanDecoder().feed_all(events)).text == "ABc12-"


def test_tab_terminator_and_enter_is_then_data():
    decoder = ScanDecoder(terminator=TAB)
    assert decoder.feed_all(typed("123\n456")) == []
    assert _only_scan(decoder.feed_all(typed("7\t", start=T0 + 0.1))).text == "123\n4567"


def test_custom_character_and_key_code_terminators():
    assert _only_scan(ScanDecoder(terminator="#").feed_all(typed("AB12#"))).text == "AB12"
    decoder = ScanDecoder(terminator=ecodes.KEY_F12)
    outcomes = decoder.feed_all([*typed("AB12\n"), *tap(T0 + 0.1, ecodes.KEY_F12)])
    assert _only_scan(outcomes).text == "AB12\n"


def test_ev_syn_and_ev_msc_alone_do_nothing():
    decoder = ScanDecoder()
    events = [
        event(T0, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70028),
        event(T0, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        event(T0, ecodes.EV_KEY, ecodes.KEY_ENTER, 0),
    ]
    assert decoder.feed_all(events) == []
    assert not decoder.pending


def test_bare_enter_is_not_a_scan():
    assert ScanDecoder().feed_all(typed("\n\n")) == []


def test_key_repeat_types_again_in_scanner_mode():
    events = [
        event(T0, ecodes.EV_KEY, ecodes.KEY_7, 1),
        event(T0 + 0.010, ecodes.EV_KEY, ecodes.KEY_7, 2),
        event(T0 + 0.020, ecodes.EV_KEY, ecodes.KEY_7, 2),
        event(T0 + 0.021, ecodes.EV_KEY, ecodes.KEY_7, 0),
        *tap(T0 + 0.025, ecodes.KEY_ENTER),
    ]
    assert _only_scan(ScanDecoder().feed_all(events)).text == "777"


def test_held_key_is_rejected_in_auto_mode():
    # Kernel autorepeat: 250 ms delay, then every 33 ms: no scanner holds a key that long.
    events = [event(T0, ecodes.EV_KEY, ecodes.KEY_7, 1)]
    events += [event(T0 + 0.25 + 0.033 * i, ecodes.EV_KEY, ecodes.KEY_7, 2) for i in range(10)]
    events += tap(T0 + 0.25 + 0.033 * 10, ecodes.KEY_ENTER)
    outcomes = ScanDecoder(mode=ScanMode.AUTO).feed_all(events)
    assert [type(o) for o in outcomes] == [Rejection]
    assert outcomes[0].reason is RejectReason.TOO_SLOW
    assert outcomes[0].excerpt == "7" * 11
    assert "held" in outcomes[0].detail


def test_auto_mode_accepts_a_fast_burst():
    outcomes = ScanDecoder(mode=ScanMode.AUTO).feed_all(typed("9501101530003\n", gap=0.008))
    assert _only_scan(outcomes).text == "9501101530003"


def test_auto_mode_rejects_slow_typing_with_a_reason():
    outcomes = ScanDecoder(mode=ScanMode.AUTO).feed_all(typed("12345678\n", gap=0.120))
    assert len(outcomes) == 1
    rejection = outcomes[0]
    assert isinstance(rejection, Rejection)
    assert rejection.reason is RejectReason.TOO_SLOW
    assert rejection.excerpt == "12345678"
    assert "120 ms" in rejection.detail


def test_auto_mode_gap_threshold_is_configurable():
    events = typed("12345678\n", gap=0.060)
    assert isinstance(ScanDecoder(mode=ScanMode.AUTO).feed_all(events)[0], Rejection)
    assert _only_scan(ScanDecoder(mode=ScanMode.AUTO, max_gap=0.080).feed_all(events)).text == "12345678"


def test_auto_mode_separates_typing_from_an_interleaved_scan():
    decoder = ScanDecoder(mode=ScanMode.AUTO)
    events = [
        *typed("hi", start=T0, gap=0.150),
        *typed("69012345678\n", start=T0 + 0.400, gap=0.005),
        *typed("ok\n", start=T0 + 0.700, gap=0.200),
    ]
    outcomes = decoder.feed_all(events)
    assert [(type(o), getattr(o, "text", None) or getattr(o, "excerpt", None)) for o in outcomes] == [
        (Rejection, "hi"),
        (Scan, "69012345678"),
        (Rejection, "ok"),
    ]
    assert all(o.reason is RejectReason.TOO_SLOW for o in outcomes if isinstance(o, Rejection))


def test_auto_mode_rejects_a_short_fast_burst():
    outcomes = ScanDecoder(mode=ScanMode.AUTO, min_length=6).feed_all(typed("12345\n"))
    assert [o.reason for o in outcomes if isinstance(o, Rejection)] == [RejectReason.TOO_SHORT]


def test_auto_mode_fast_burst_then_pause_is_unterminated():
    events = [*typed("12345678", gap=0.005), *typed("\n", start=T0 + 0.2)]
    outcomes = ScanDecoder(mode=ScanMode.AUTO).feed_all(events)
    assert [o.reason for o in outcomes if isinstance(o, Rejection)] == [RejectReason.UNTERMINATED]


def test_unterminated_burst_is_reported_on_flush():
    decoder = ScanDecoder()
    assert decoder.feed_all(typed("12345")) == []
    assert decoder.pending
    outcomes = decoder.flush()
    assert len(outcomes) == 1
    assert outcomes[0].reason is RejectReason.UNTERMINATED
    assert outcomes[0].excerpt == "12345"
    assert not decoder.pending


def test_unterminated_burst_does_not_prefix_the_next_scan():
    events = [*typed("12345", start=T0), *typed("67890\n", start=T0 + 2)]
    outcomes = ScanDecoder().feed_all(events)
    assert [type(o) for o in outcomes] == [Rejection, Scan]
    assert outcomes[0].reason is RejectReason.UNTERMINATED
    assert outcomes[1].text == "67890"


def test_clock_stepping_back_ends_the_burst():
    events = [*typed("12345", start=T0), *typed("678\n", start=T0 - 60)]
    outcomes = ScanDecoder().feed_all(events)
    assert [type(o) for o in outcomes] == [Rejection, Scan]
    assert outcomes[1].text == "678"


def test_very_long_burst_is_rejected_and_memory_stays_bounded():
    decoder = ScanDecoder(max_length=100)
    events = typed("7" * 5000, gap=0.0001)
    held = []
    for e in events:
        assert decoder.feed(e) == []
        held.append(decoder.buffered)
    assert max(held) == 100
    outcomes = decoder.feed_all(typed("\n", start=T0 + 0.6))
    assert len(outcomes) == 1
    assert outcomes[0].reason is RejectReason.TOO_LONG
    assert outcomes[0].length == 5000
    assert outcomes[0].excerpt == "7" * 64
    assert _only_scan(decoder.feed_all(typed("42\n", start=T0 + 1))).text == "42"


def test_aim_prefix_is_parsed_when_enabled():
    raw = "]C10109501101530003"
    scan = _only_scan(ScanDecoder(aim=True).feed_all(typed(raw + "\n")))
    assert scan.aim == AimId("C1", "GS1-128", gs1=True)
    assert scan.text == "0109501101530003"
    assert _only_scan(ScanDecoder().feed_all(typed(raw + "\n"))).text == raw


@pytest.mark.parametrize(
    ("text", "code", "symbology", "gs1", "payload"),
    [
        ("]E09501101530003", "E0", "EAN-13/UPC-A", False, "9501101530003"),
        ("]E495010001", "E4", "EAN-8", False, "95010001"),
        ("]d2010950110153000317261231", "d2", "GS1 DataMatrix", True, "010950110153000317261231"),
        ("]Q3https://x", "Q3", "GS1 QR Code", True, "https://x"),
        ("]Q1https://x", "Q1", "QR Code", False, "https://x"),
        ("]A0CODE39", "A0", "Code 39", False, "CODE39"),
    ],
)
def test_parse_aim(text, code, symbology, gs1, payload):
    aim, rest = parse_aim(text)
    assert aim == AimId(code, symbology, gs1)
    assert aim.prefix == "]" + code
    assert rest == payload


@pytest.mark.parametrize("text", ["", "]C", "]W1abc", "]C-abc", "0109501101530003", "[C1abc"])
def test_parse_aim_leaves_other_text_alone(text):
    assert parse_aim(text) == (None, text)


def test_ctrl_right_bracket_in_a_burst_becomes_gs():
    events = [
        *typed("0109501101530003" + "10AB", start=T0),
        *chord(T0 + 0.2, ecodes.KEY_LEFTCTRL, ecodes.KEY_RIGHTBRACE),
        *typed("17261231\n", start=T0 + 0.21),
    ]
    assert _only_scan(ScanDecoder().feed_all(events)).text == "010950110153000310AB" + GS + "17261231"


def test_gs_substitute_character_becomes_gs():
    decoder = ScanDecoder(gs_substitute="~")
    assert _only_scan(decoder.feed_all(typed("10AB~17261231\n"))).text == "10AB" + GS + "17261231"


@pytest.mark.parametrize(
    "kwargs",
    [{"terminator": "\r\n"}, {"terminator": ""}, {"max_gap": 0}, {"max_gap": 1, "idle_timeout": 0.5}],
)
def test_bad_configuration_is_refused(kwargs):
    with pytest.raises(ValueError, match=r"terminator|max_gap"):
        ScanDecoder(**kwargs)


_events = st.builds(
    lambda dt, etype, code, value: (dt, etype, code, value),
    st.floats(min_value=-1.0, max_value=2.0, allow_nan=False),
    st.sampled_from([ecodes.EV_KEY, ecodes.EV_KEY, ecodes.EV_KEY, ecodes.EV_SYN, ecodes.EV_MSC]),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=2),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_events, max_size=300), st.sampled_from(list(ScanMode)), st.booleans())
def test_decoder_never_raises_and_stays_bounded(steps, mode, aim):
    decoder = ScanDecoder(mode=mode, aim=aim, max_length=32, gs_substitute="~")
    t = T0
    for dt, etype, code, value in steps:
        t += dt
        for outcome in decoder.feed(InputEvent(int(t), int((t % 1) * 1e6), etype, code, value)):
            assert isinstance(outcome, Scan | Rejection)
        assert decoder.buffered <= 32 + 64
    for outcome in decoder.flush():
        assert isinstance(outcome, Rejection)
    assert not decoder.pending


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=TYPABLE.replace("\n", ""), min_size=1, max_size=80))
def test_any_typable_text_round_trips_in_both_modes(text):
    for mode in ScanMode:
        decoder = ScanDecoder(mode=mode, min_length=1)
        assert _only_scan(decoder.feed_all(typed(text + "\n", gap=0.002))).text == text


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet="0123456789abcXYZ", min_size=1, max_size=30), st.floats(min_value=0.041, max_value=3.0)
)
def test_slow_typing_never_becomes_a_scan_in_auto_mode(text, gap):
    decoder = ScanDecoder(mode=ScanMode.AUTO)
    outcomes = [*decoder.feed_all(typed(text + "\n", gap=gap)), *decoder.flush()]
    assert outcomes
    assert not any(isinstance(o, Scan) for o in outcomes)


async def test_outcome_queue_drops_the_oldest_when_full_and_ends_with_unavailable(caplog):
    queue = OutcomeQueue("till-1", maxsize=2)
    scans = [Scan(str(n), T0, T0) for n in range(3)]
    for scan in scans:
        queue.put(scan)
    assert "nobody is reading" in caplog.text
    queue.close("unplugged")
    assert [await queue.get()] == [scans[2]]
    with pytest.raises(ScannerUnavailable, match="'till-1' is unavailable \\(unplugged\\)") as caught:
        await queue.get()
    assert caught.value.device == "till-1"
    with pytest.raises(ScannerUnavailable):
        await queue.get()
