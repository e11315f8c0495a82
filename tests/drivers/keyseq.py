"""Build real evdev event sequences as a US keyboard (or a wedge scanner) would send them.

The character table is written out by hand, independently of drivers.keymap, so tests
compare the keymap against a second source rather than against itself.
"""

from __future__ import annotations

from evdev import InputEvent, ecodes

_PLAIN = {
    **{c: getattr(ecodes, f"KEY_{c.upper()}") for c in "abcdefghijklmnopqrstuvwxyz"},
    **{c: getattr(ecodes, f"KEY_{c}") for c in "0123456789"},
    "-": ecodes.KEY_MINUS,
    "=": ecodes.KEY_EQUAL,
    "[": ecodes.KEY_LEFTBRACE,
    "]": ecodes.KEY_RIGHTBRACE,
    ";": ecodes.KEY_SEMICOLON,
    "'": ecodes.KEY_APOSTROPHE,
    "`": ecodes.KEY_GRAVE,
    "\\": ecodes.KEY_BACKSLASH,
    ",": ecodes.KEY_COMMA,
    ".": ecodes.KEY_DOT,
    "/": ecodes.KEY_SLASH,
    " ": ecodes.KEY_SPACE,
    "\n": ecodes.KEY_ENTER,
    "\t": ecodes.KEY_TAB,
}
_SHIFTED = {
    **{c.upper(): getattr(ecodes, f"KEY_{c.upper()}") for c in "abcdefghijklmnopqrstuvwxyz"},
    "!": ecodes.KEY_1,
    "@": ecodes.KEY_2,
    "#": ecodes.KEY_3,
    "$": ecodes.KEY_4,
    "%": ecodes.KEY_5,
    "^": ecodes.KEY_6,
    "&": ecodes.KEY_7,
    "*": ecodes.KEY_8,
    "(": ecodes.KEY_9,
    ")": ecodes.KEY_0,
    "_": ecodes.KEY_MINUS,
    "+": ecodes.KEY_EQUAL,
    "{": ecodes.KEY_LEFTBRACE,
    "}": ecodes.KEY_RIGHTBRACE,
    ":": ecodes.KEY_SEMICOLON,
    '"': ecodes.KEY_APOSTROPHE,
    "~": ecodes.KEY_GRAVE,
    "|": ecodes.KEY_BACKSLASH,
    "<": ecodes.KEY_COMMA,
    ">": ecodes.KEY_DOT,
    "?": ecodes.KEY_SLASH,
}
TYPABLE = "".join(sorted(set(_PLAIN) | set(_SHIFTED)))


def event(t: float, etype: int, code: int, value: int) -> InputEvent:
    """An InputEvent at epoch time `t` seconds."""
    sec = int(t)
    return InputEvent(sec, round((t - sec) * 1_000_000), etype, code, value)


def tap(t: float, code: int, *, hold: float = 0.001) -> list[InputEvent]:
    """Press and release one key as a keyboard reports it: MSC_SCAN, EV_KEY, SYN_REPORT."""
    return [
        event(t, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 + code),
        event(t, ecodes.EV_KEY, code, 1),
        event(t, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        event(t + hold, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 + code),
        event(t + hold, ecodes.EV_KEY, code, 0),
        event(t + hold, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
    ]


def chord(t: float, modifier: int, code: int) -> list[InputEvent]:
    """Hold `modifier`, tap `code`, release the modifier."""
    return [
        event(t, ecodes.EV_KEY, modifier, 1),
        *tap(t, code),
        event(t + 0.002, ecodes.EV_KEY, modifier, 0),
    ]


def typed(text: str, *, start: float = 1_700_000_000.0, gap: float = 0.004) -> list[InputEvent]:
    """Events for `text` typed with `gap` seconds between key presses; Shift for capitals and symbols."""
    events: list[InputEvent] = []
    for index, char in enumerate(text):
        t = start + index * gap
        if char in _PLAIN:
            events += tap(t, _PLAIN[char])
        else:
            events += chord(t, ecodes.KEY_LEFTSHIFT, _SHIFTED[char])
    return events
