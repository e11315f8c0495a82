"""Mainland China mobile numbers, shared by the till (validates) and the hub (stores)."""

from __future__ import annotations

import re

__all__ = ["mainland_mobile", "mask_phone"]

# 11 digits, 1 then 3-9. Landlines and Hong Kong numbers are not member identities here;
# a chain that needs them adds a country code column first.
_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_SEPARATORS = re.compile(r"[\s\-()（）]")


def mainland_mobile(raw: str) -> str | None:
    """The 11-digit form of a mainland mobile number typed any usual way (+86, spaces, dashes).

    None if it is not one, so each side raises its own error with the number in it.
    """
    digits = _SEPARATORS.sub("", raw.strip())
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == 11 + len(prefix):
            digits = digits[len(prefix) :]
            break
    return digits if _MOBILE.match(digits) else None


def mask_phone(phone: str | None) -> str:
    """The phone as a cashier may see it: 138****5678."""
    if not phone:
        return ""
    return f"{phone[:3]}****{phone[-4:]}"
