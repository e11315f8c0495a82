"""US-layout keymap: evdev key codes to characters, with Shift, CapsLock, Ctrl and Alt+keypad codes.

Keyboard-wedge scanners type as a US keyboard whatever the console's layout is, so we keep
our own table instead of asking X11 or the kernel's console keymap.
"""

from __future__ import annotations

from evdev import ecodes

ENTER = "\n"
TAB = "\t"
GS = "\x1d"

# code: (unshifted, shifted)
_PAIRS: dict[int, tuple[str, str]] = {
    ecodes.KEY_1: ("1", "!"),
    ecodes.KEY_2: ("2", "@"),
    ecodes.KEY_3: ("3", "#"),
    ecodes.KEY_4: ("4", "$"),
    ecodes.KEY_5: ("5", "%"),
    ecodes.KEY_6: ("6", "^"),
    ecodes.KEY_7: ("7", "&"),
    ecodes.KEY_8: ("8", "*"),
    ecodes.KEY_9: ("9", "("),
    ecodes.KEY_0: ("0", ")"),
    ecodes.KEY_MINUS: ("-", "_"),
    ecodes.KEY_EQUAL: ("=", "+"),
    ecodes.KEY_LEFTBRACE: ("[", "{"),
    ecodes.KEY_RIGHTBRACE: ("]", "}"),
    ecodes.KEY_SEMICOLON: (";", ":"),
    ecodes.KEY_APOSTROPHE: ("'", '"'),
    ecodes.KEY_GRAVE: ("`", "~"),
    ecodes.KEY_BACKSLASH: ("\\", "|"),
    ecodes.KEY_COMMA: (",", "<"),
    ecodes.KEY_DOT: (".", ">"),
    ecodes.KEY_SLASH: ("/", "?"),
    ecodes.KEY_SPACE: (" ", " "),
    ecodes.KEY_ENTER: (ENTER, ENTER),
    ecodes.KEY_TAB: (TAB, TAB),
}

_LETTERS: dict[int, str] = {
    getattr(ecodes, f"KEY_{letter}"): letter.lower() for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
}

# Keypad keys ignore Shift; wedges that use the keypad assume NumLock is on, and the
# LED state is not something we can trust, so keypad digits are always digits.
_KEYPAD: dict[int, str] = {
    **{getattr(ecodes, f"KEY_KP{digit}"): str(digit) for digit in range(10)},
    ecodes.KEY_KPDOT: ".",
    ecodes.KEY_KPSLASH: "/",
    ecodes.KEY_KPASTERISK: "*",
    ecodes.KEY_KPMINUS: "-",
    ecodes.KEY_KPPLUS: "+",
    ecodes.KEY_KPEQUAL: "=",
    ecodes.KEY_KPCOMMA: ",",
    ecodes.KEY_KPENTER: ENTER,
}

_KEYPAD_DIGITS: dict[int, str] = {getattr(ecodes, f"KEY_KP{digit}"): str(digit) for digit in range(10)}
_SHIFTS = frozenset({ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT})
_CTRLS = frozenset({ecodes.KEY_LEFTCTRL, ecodes.KEY_RIGHTCTRL})
_ALTS = frozenset({ecodes.KEY_LEFTALT, ecodes.KEY_RIGHTALT})
_MODIFIERS = _SHIFTS | _CTRLS | _ALTS | {ecodes.KEY_CAPSLOCK}
_KEY_UP, _KEY_DOWN, _KEY_REPEAT = 0, 1, 2


def char_for(code: int, *, shift: bool = False, caps: bool = False) -> str | None:
    """Return the character a US keyboard types for `code`, or None for keys that type nothing."""
    if code in _LETTERS:
        letter = _LETTERS[code]
        # CapsLock inverts Shift for letters only, as on a PC keyboard.
        return letter.upper() if shift != caps else letter
    if code in _PAIRS:
        plain, shifted = _PAIRS[code]
        return shifted if shift else plain
    return _KEYPAD.get(code)


def _control_char(char: str) -> str | None:
    # Ctrl+] is how wedges type GS (FNC1); the same rule gives FS, RS, US and EOT.
    upper = char.upper()
    if len(upper) == 1 and "@" <= upper <= "_":
        return chr(ord(upper) & 0x1F)
    return None


def _alt_code(digits: str) -> str:
    # Windows Alt codes: a leading zero selects the ANSI code page, otherwise the OEM one.
    number = int(digits) % 256
    if number < 0x80:
        return chr(number)
    return bytes([number]).decode("cp1252" if digits.startswith("0") else "cp437", errors="replace")


class KeyboardState:
    """Tracks modifier state of one keyboard and turns key events into characters."""

    def __init__(self) -> None:
        """Start with no modifier held and CapsLock off."""
        self._held: set[int] = set()
        self.caps_lock = False
        self._alt_digits = ""

    @property
    def shift(self) -> bool:
        """Whether either Shift key is held."""
        return not self._held.isdisjoint(_SHIFTS)

    @property
    def ctrl(self) -> bool:
        """Whether either Ctrl key is held."""
        return not self._held.isdisjoint(_CTRLS)

    @property
    def alt(self) -> bool:
        """Whether either Alt key is held."""
        return not self._held.isdisjoint(_ALTS)

    def reset(self) -> None:
        """Forget held keys and CapsLock, e.g. after the device was reopened."""
        self._held.clear()
        self.caps_lock = False
        self._alt_digits = ""

    def key(self, code: int, value: int) -> str | None:
        """Apply one EV_KEY event (value 0 up, 1 down, 2 repeat); return the character typed, if any."""
        if code in _MODIFIERS:
            return self._modifier(code, value)
        if value not in (_KEY_DOWN, _KEY_REPEAT):
            return None
        if self.alt:
            if code in _KEYPAD_DIGITS and value == _KEY_DOWN:
                self._alt_digits = (self._alt_digits + _KEYPAD_DIGITS[code])[-4:]
            return None
        char = char_for(code, shift=self.shift, caps=self.caps_lock)
        if char is not None and self.ctrl:
            return _control_char(char)
        return char

    def _modifier(self, code: int, value: int) -> str | None:
        if value == _KEY_UP:
            self._held.discard(code)
            if code in _ALTS and not self.alt and self._alt_digits:
                digits, self._alt_digits = self._alt_digits, ""
                return _alt_code(digits)
            return None
        if value == _KEY_DOWN:
            if code == ecodes.KEY_CAPSLOCK:
                self.caps_lock = not self.caps_lock
            else:
                if code in _ALTS and not self.alt:
                    self._alt_digits = ""
                self._held.add(code)
        return None
