"""The US keymap: letters, digits, symbols, Shift, CapsLock, keypad, Ctrl and Alt codes."""

from __future__ import annotations

import pytest
from evdev import ecodes

from drivers.keymap import GS, KeyboardState, char_for
from tests.drivers.keyseq import TYPABLE, typed


def _type(state: KeyboardState, text: str) -> str:
    out = [state.key(e.code, e.value) for e in typed(text) if e.type == ecodes.EV_KEY]
    return "".join(c for c in out if c is not None)


@pytest.mark.parametrize(
    ("code", "shift", "caps", "expected"),
    [
        (ecodes.KEY_A, False, False, "a"),
        (ecodes.KEY_A, True, False, "A"),
        (ecodes.KEY_A, False, True, "A"),
        (ecodes.KEY_A, True, True, "a"),
        (ecodes.KEY_1, True, True, "!"),
        (ecodes.KEY_1, False, True, "1"),
        (ecodes.KEY_APOSTROPHE, True, False, '"'),
        (ecodes.KEY_GRAVE, True, False, "~"),
        (ecodes.KEY_BACKSLASH, False, False, "\\"),
        (ecodes.KEY_SLASH, True, False, "?"),
        (ecodes.KEY_SPACE, True, False, " "),
        (ecodes.KEY_KP7, True, False, "7"),
        (ecodes.KEY_KPASTERISK, False, False, "*"),
        (ecodes.KEY_KPMINUS, False, False, "-"),
        (ecodes.KEY_KPENTER, False, False, "\n"),
        (ecodes.KEY_TAB, False, False, "\t"),
        (ecodes.KEY_F1, False, False, None),
        (ecodes.KEY_LEFTSHIFT, False, False, None),
    ],
)
def test_char_for(code, shift, caps, expected):
    assert char_for(code, shift=shift, caps=caps) == expected


def test_every_typable_character_round_trips():
    assert _type(KeyboardState(), TYPABLE) == TYPABLE


def test_right_shift_counts_and_release_ends_it():
    state = KeyboardState()
    state.key(ecodes.KEY_RIGHTSHIFT, 1)
    assert state.key(ecodes.KEY_9, 1) == "("
    state.key(ecodes.KEY_RIGHTSHIFT, 0)
    assert state.key(ecodes.KEY_9, 1) == "9"


def test_one_shift_released_while_the_other_is_held_still_shifts():
    state = KeyboardState()
    state.key(ecodes.KEY_LEFTSHIFT, 1)
    state.key(ecodes.KEY_RIGHTSHIFT, 1)
    state.key(ecodes.KEY_LEFTSHIFT, 0)
    assert state.key(ecodes.KEY_B, 1) == "B"


def test_caps_lock_toggles_on_press_and_affects_letters_only():
    state = KeyboardState()
    state.key(ecodes.KEY_CAPSLOCK, 1)
    state.key(ecodes.KEY_CAPSLOCK, 0)
    assert state.caps_lock
    assert _type(state, "ab1-") == "AB1-"
    assert _type(state, "AB!_") == "ab!_"
    state.key(ecodes.KEY_CAPSLOCK, 1)
    state.key(ecodes.KEY_CAPSLOCK, 2)
    assert not state.caps_lock


def test_key_up_types_nothing_and_repeat_types_again():
    state = KeyboardState()
    assert state.key(ecodes.KEY_X, 1) == "x"
    assert state.key(ecodes.KEY_X, 2) == "x"
    assert state.key(ecodes.KEY_X, 0) is None


def test_ctrl_right_bracket_is_gs():
    state = KeyboardState()
    state.key(ecodes.KEY_LEFTCTRL, 1)
    assert state.key(ecodes.KEY_RIGHTBRACE, 1) == GS
    assert state.key(ecodes.KEY_1, 1) is None
    state.key(ecodes.KEY_LEFTCTRL, 0)
    assert state.key(ecodes.KEY_RIGHTBRACE, 1) == "]"


def test_ctrl_d_is_eot():
    state = KeyboardState()
    state.key(ecodes.KEY_RIGHTCTRL, 1)
    assert state.key(ecodes.KEY_D, 1) == "\x04"


@pytest.mark.parametrize(("digits", "expected"), [("0029", GS), ("65", "A"), ("0233", "é"), ("130", "é")])
def test_alt_keypad_code(digits, expected):
    state = KeyboardState()
    state.key(ecodes.KEY_LEFTALT, 1)
    for digit in digits:
        assert state.key(getattr(ecodes, f"KEY_KP{digit}"), 1) is None
        state.key(getattr(ecodes, f"KEY_KP{digit}"), 0)
    assert state.key(ecodes.KEY_LEFTALT, 0) == expected
    assert state.key(ecodes.KEY_LEFTALT, 1) is None
    assert state.key(ecodes.KEY_LEFTALT, 0) is None


def test_reset_forgets_modifiers_and_caps():
    state = KeyboardState()
    state.key(ecodes.KEY_LEFTSHIFT, 1)
    state.key(ecodes.KEY_CAPSLOCK, 1)
    state.reset()
    assert not state.shift
    assert not state.caps_lock
    assert state.key(ecodes.KEY_Q, 1) == "q"
