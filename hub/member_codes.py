"""Member codes for checkout: an 18-digit code that rotates every 30 s and works once.

Layout: `96` + an 8-digit handle (random, fixed per member, finds the member's secret)
+ an 8-digit one-time password (RFC 4226 HOTP with HMAC-SHA256 over the 30-second window
number, like TOTP in RFC 6238). The prefix `96` and the length tell a scanner's text
apart from product barcodes (EAN-8/13, UPC-A, ITF-14: 8-14 digits), WeChat Pay codes
(18 digits starting 10-15), Alipay codes (16-24 digits starting 25-30) and UnionPay codes
(starting 62). The hub makes the codes (the member app or kiosk fetches the current one),
so phone clocks do not matter; a code is accepted in its own window and the one after
(shown just before it rotated, scanned just after; hub instances a few seconds apart),
and only once: a screenshot shown again later is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, ForeignKey, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from hub.db import AsyncSession
from hub.errors import HubError
from hub.members import get_member, open_transaction
from hub.models import Base

__all__ = [
    "CODE_PREFIX",
    "WINDOW_S",
    "CodeExpired",
    "CodeInvalid",
    "CodeUsed",
    "IssuedCode",
    "MemberCodeKey",
    "MemberCodeRefused",
    "MemberCodeUse",
    "issue_code",
    "looks_like_member_code",
    "redeem_code",
]

CODE_PREFIX = "96"
WINDOW_S = 30
_HANDLE_DIGITS = 8
_OTP_DIGITS = 8
_CODE = re.compile(rf"^{CODE_PREFIX}(\d{{{_HANDLE_DIGITS}}})(\d{{{_OTP_DIGITS}}})$")
# A code this many windows old (10 minutes) is called expired; anything else is "not a code".
_EXPIRED_LOOKBACK = 20


class MemberCodeRefused(HubError):
    """A member code that cannot be used; the message is meant for the cashier."""


class CodeInvalid(MemberCodeRefused):
    """Not a member code, or not one this hub issued."""


class CodeExpired(MemberCodeRefused):
    """A real code, but older than its window and the one after."""


class CodeUsed(MemberCodeRefused):
    """A real, current code that was already used once."""


class MemberCodeKey(Base):
    """A member's code secret and the handle that finds it from a code."""

    __tablename__ = "member_code_keys"

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    handle: Mapped[str] = mapped_column(String(_HANDLE_DIGITS), unique=True)
    secret: Mapped[str] = mapped_column(String(64))  # hex of 32 random bytes
    created_at: Mapped[datetime]


class MemberCodeUse(Base):
    """A window whose code was used: the code of that window is refused from then on."""

    __tablename__ = "member_code_uses"

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    store: Mapped[str | None] = mapped_column(String(32))
    used_at: Mapped[datetime]


@dataclass(frozen=True)
class IssuedCode:
    """A code to show; refresh it at `refresh_at`, it is refused after `expires_at`."""

    member_id: str
    code: str
    refresh_at: datetime
    expires_at: datetime

    @property
    def qr(self) -> str:
        """The QR payload: the same digits, so a scanner hands the till the same text either way."""
        return self.code


def looks_like_member_code(text: str) -> bool:
    """True if `text` has the shape of a member code (the till routes such scans to `member.lookup`)."""
    return _CODE.match(text.strip()) is not None


def _window(now: datetime) -> int:
    return int(now.timestamp()) // WINDOW_S


def _window_start(window: int) -> datetime:
    return datetime.fromtimestamp(window * WINDOW_S, UTC)


def _otp(secret_hex: str, window: int) -> str:
    digest = hmac.new(bytes.fromhex(secret_hex), window.to_bytes(8, "big"), hashlib.sha256).digest()
    offset = digest[-1] & 0x0F
    value = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
    return f"{value % 10**_OTP_DIGITS:0{_OTP_DIGITS}d}"


async def _key(session: AsyncSession, member_id: str, now: datetime) -> MemberCodeKey:
    """The member's key, created on first use (a concurrent first use gets the same one)."""
    key = await session.get(MemberCodeKey, member_id)
    if key is not None:
        return key
    await open_transaction(session)
    for _ in range(5):  # a handle collision is rare (1e8 handles); a new draw fixes it
        key = MemberCodeKey(
            member_id=member_id,
            handle=f"{secrets.randbelow(10**_HANDLE_DIGITS):0{_HANDLE_DIGITS}d}",
            secret=secrets.token_hex(32),
            created_at=now,
        )
        try:
            async with session.begin_nested():
                session.add(key)
                await session.flush()
        except IntegrityError:
            existing = await session.get(MemberCodeKey, member_id)
            if existing is not None:
                return existing
            continue
        return key
    raise HubError("could not allocate a member code; try again")


async def issue_code(session: AsyncSession, member_id: str, *, now: datetime | None = None) -> IssuedCode:
    """The current code of a member (of the survivor, if this member was merged)."""
    now = now or datetime.now(UTC)
    member = await get_member(session, member_id)
    key = await _key(session, member.id, now)
    window = _window(now)
    return IssuedCode(
        member_id=member.id,
        code=f"{CODE_PREFIX}{key.handle}{_otp(key.secret, window)}",
        refresh_at=_window_start(window + 1),
        expires_at=_window_start(window + 2),
    )


async def redeem_code(
    session: AsyncSession, code: str, *, store: str | None, now: datetime | None = None
) -> str:
    """Use a code once and return the member id it stands for; `MemberCodeRefused` otherwise."""
    now = now or datetime.now(UTC)
    match = _CODE.match(code.strip())
    if match is None:
        raise CodeInvalid(f"{code!r} is not a member code (18 digits starting with {CODE_PREFIX})")
    handle, otp = match.groups()
    key = await session.scalar(select(MemberCodeKey).where(MemberCodeKey.handle == handle))
    if key is None:
        raise CodeInvalid("this member code is not known; ask the member to open their code again")
    current = _window(now)
    for window in (current, current - 1):
        if hmac.compare_digest(_otp(key.secret, window), otp):
            await _record_use(session, key.member_id, window, store, now)
            return (await get_member(session, key.member_id)).id
    for window in range(current - 2, current - _EXPIRED_LOOKBACK, -1):
        if hmac.compare_digest(_otp(key.secret, window), otp):
            raise CodeExpired(
                "this member code has expired; ask the member to show the code on their phone again"
            )
    raise CodeInvalid("this member code is not valid; ask the member to show the code on their phone again")


async def _record_use(
    session: AsyncSession, member_id: str, window: int, store: str | None, now: datetime
) -> None:
    await open_transaction(session)
    try:
        async with session.begin_nested():
            session.add(MemberCodeUse(member_id=member_id, window=window, store=store, used_at=now))
            await session.flush()
    except IntegrityError as err:
        raise CodeUsed(
            "this member code was already used; ask the member for the new code their phone shows"
        ) from err
    # Uses older than the acceptance span can never match again: keep the table small.
    await session.execute(
        delete(MemberCodeUse).where(MemberCodeUse.member_id == member_id, MemberCodeUse.window < window - 2)
    )
