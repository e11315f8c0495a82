"""Who may use the till: paired devices, staff PIN sign-in, sessions and permissions.

A phone pairs once with a short-lived code (`storelink-edge pair`) and keeps a device
token; staff then sign in on it with their PIN for a session token that carries their
role. Tokens and codes are stored only as SHA-256 (they are long random secrets); PINs,
which are short and chosen by people, are argon2 hashes from the staff snapshot.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.documents import read_document, write_document
from edge.errors import TillError
from edge.journal import Journal
from protocol import new_id

__all__ = [
    "AccessError",
    "PairingGuard",
    "Principal",
    "Role",
    "StaffDocument",
    "StaffMember",
    "add_staff",
    "create_pairing_code",
    "hash_pin",
    "load_staff",
    "pair_device",
    "resolve_token",
    "revoke_device",
    "sign_in",
    "sign_out",
]

DEVICE_PREFIX, SESSION_PREFIX = "sld_", "sls_"
PAIRING_TTL = timedelta(minutes=5)
SESSION_TTL = timedelta(hours=12)
MAX_PIN_FAILURES = 5
PIN_LOCK = timedelta(minutes=5)
MAX_PAIRING_FAILURES = 5
_hasher = PasswordHasher()
_DUMMY_PIN_HASH = _hasher.hash(secrets.token_hex(8))


class AccessError(TillError):
    """Missing, expired or revoked credentials (401) or a missing permission (403)."""


class Role(StrEnum):
    """Store staff roles."""

    OWNER = "owner"
    MANAGER = "manager"
    CASHIER = "cashier"
    WAITER = "waiter"
    KITCHEN = "kitchen"


_R = Role
PERMISSIONS: dict[str, frozenset[Role]] = {
    "order.sell": frozenset({_R.OWNER, _R.MANAGER, _R.CASHIER, _R.WAITER}),
    "order.pay": frozenset({_R.OWNER, _R.MANAGER, _R.CASHIER}),
    "order.refund": frozenset({_R.OWNER, _R.MANAGER}),
    "order.void": frozenset({_R.OWNER, _R.MANAGER}),
    "price.override": frozenset({_R.OWNER, _R.MANAGER}),
    "drawer.open": frozenset({_R.OWNER, _R.MANAGER}),
    "shift.open": frozenset({_R.OWNER, _R.MANAGER, _R.CASHIER}),
    "shift.close": frozenset({_R.OWNER, _R.MANAGER, _R.CASHIER}),
    "receipt.reprint": frozenset({_R.OWNER, _R.MANAGER, _R.CASHIER}),
    "devices.test": frozenset({_R.OWNER, _R.MANAGER}),
    "tables.layout": frozenset({_R.OWNER, _R.MANAGER}),  # the floor plan (edge/tables.py)
    "stock.count": frozenset({_R.OWNER, _R.MANAGER, _R.CASHIER, _R.WAITER}),
    "stock.transfer": frozenset({_R.OWNER, _R.MANAGER, _R.CASHIER}),
}


class StaffMember(BaseModel):
    """A person who signs in at the till."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    name: str = Field(min_length=1, max_length=50)
    role: Role
    pin_hash: str
    active: bool = True


class StaffDocument(BaseModel):
    """The staff snapshot (from a file until the hub syncs it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=0)
    staff: list[StaffMember]

    @model_validator(mode="after")
    def _unique(self) -> StaffDocument:
        ids = [s.id for s in self.staff]
        if len(ids) != len(set(ids)):
            raise ValueError("staff ids must be unique")
        return self

    def get(self, staff_id: str) -> StaffMember | None:
        """The active staff member with this id."""
        return next((s for s in self.staff if s.id == staff_id and s.active), None)


def hash_pin(pin: str) -> str:
    """Argon2 hash of a 4-8 digit PIN."""
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 8):
        raise ValueError("a PIN is 4 to 8 digits")
    return _hasher.hash(pin)


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class Principal:
    """The caller: always a paired device, plus a staff member once signed in."""

    device_id: str
    staff: StaffMember | None = None

    def require(self, permission: str) -> StaffMember:
        """The signed-in staff member if their role allows `permission`, else `AccessError`."""
        if self.staff is None:
            raise AccessError("sign in with a staff PIN first (POST /api/v1/sessions)", status=401)
        if self.staff.role not in PERMISSIONS[permission]:
            raise AccessError(
                f"{self.staff.name} ({self.staff.role}) may not do {permission}; ask a manager",
                status=403,
            )
        return self.staff


async def create_pairing_code(journal: Journal, now: datetime | None = None) -> str:
    """A 6-digit code valid for 5 minutes that pairs one device."""
    now = now or datetime.now(UTC)
    code = f"{secrets.randbelow(1_000_000):06d}"

    def work(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM pairing_codes WHERE expires_at < ?", (_iso(now),))
        conn.execute(
            "INSERT OR REPLACE INTO pairing_codes (code_hash, expires_at) VALUES (?, ?)",
            (_sha(code), _iso(now + PAIRING_TTL)),
        )

    await journal.transaction(work)
    return code


class PairingGuard:
    """Six digits are guessable: each address gets a few wrong codes per window, then waits.

    Per address (bounded table), so a stranger on the LAN cannot lock the installer out.
    """

    def __init__(
        self, max_failures: int = MAX_PAIRING_FAILURES, window_s: float = 300.0, max_keys: int = 1000
    ):
        self.max_failures, self.window_s, self.max_keys = max_failures, window_s, max_keys
        self._failures: dict[str, list[float]] = {}

    def check(self, address: str) -> None:
        """Raise `AccessError` (429) if this address has guessed wrong too often lately."""
        now = time.monotonic()
        recent = [t for t in self._failures.get(address, []) if now - t < self.window_s]
        self._failures[address] = recent
        if len(recent) >= self.max_failures:
            raise AccessError("too many wrong pairing codes from this device; wait 5 minutes", status=429)

    def failed(self, address: str) -> None:
        """Count a wrong code."""
        if address not in self._failures and len(self._failures) >= self.max_keys:
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, []).append(time.monotonic())


async def pair_device(
    journal: Journal, code: str, name: str, *, guard: PairingGuard | None = None, address: str = "?"
) -> tuple[str, str]:
    """Trade a valid pairing code for (device id, device token)."""
    if guard is not None:
        guard.check(address)
    now = datetime.now(UTC)
    device_id = str(new_id())
    token = DEVICE_PREFIX + secrets.token_urlsafe(32)

    def work(conn: sqlite3.Connection) -> bool:
        row = conn.execute(
            "DELETE FROM pairing_codes WHERE code_hash = ? AND expires_at >= ? RETURNING 1",
            (_sha(code), _iso(now)),
        ).fetchone()
        if row is None:
            return False
        conn.execute(
            "INSERT INTO devices (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
            (device_id, name, _sha(token), _iso(now)),
        )
        return True

    if not await journal.transaction(work):
        if guard is not None:
            guard.failed(address)
        raise AccessError(
            "pairing code is wrong or expired; run `storelink-edge pair` for a new one",
            status=401,
        )
    return device_id, token


async def revoke_device(journal: Journal, device_id: str) -> bool:
    """Revoke a device and end its sessions; False if no such active device."""
    now = _iso(datetime.now(UTC))

    def work(conn: sqlite3.Connection) -> bool:
        cur = conn.execute(
            "UPDATE devices SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, device_id),
        )
        conn.execute("DELETE FROM sessions WHERE device_id = ?", (device_id,))
        return cur.rowcount == 1

    return await journal.transaction(work)


async def resolve_token(journal: Journal, token: str, staff: StaffDocument) -> Principal:
    """Map a device or session token to its principal, or raise `AccessError` (401)."""
    now = _iso(datetime.now(UTC))
    digest = _sha(token)

    def work(conn: sqlite3.Connection) -> tuple[str, str | None] | None:
        if token.startswith(SESSION_PREFIX):
            row = conn.execute(
                "SELECT s.device_id, s.staff_id FROM sessions s JOIN devices d ON d.id = s.device_id"
                " WHERE s.token_hash = ? AND s.expires_at > ? AND d.revoked_at IS NULL",
                (digest, now),
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT id, NULL FROM devices WHERE token_hash = ? AND revoked_at IS NULL",
                (digest,),
            ).fetchone()
        return (row[0], row[1]) if row else None

    found = await journal.read(work)
    if found is None:
        raise AccessError("token unknown, expired or revoked; pair or sign in again", status=401)
    device_id, staff_id = found
    if staff_id is None:
        return Principal(device_id)
    member = staff.get(staff_id)
    if member is None:
        raise AccessError(f"staff member {staff_id} is no longer active", status=401)
    return Principal(device_id, member)


_SIGN_IN_LOCKS: dict[str, asyncio.Lock] = {}
_VERIFY_SLOTS = asyncio.Semaphore(2)  # argon2 takes 64 MiB per verify; a Pi has little RAM


async def sign_in(
    journal: Journal, staff: StaffDocument, device_id: str, staff_id: str, pin: str
) -> tuple[str, datetime, StaffMember]:
    """Check a PIN (5 wrong tries lock that person for 5 minutes) and open a session.

    Attempts for one person run one at a time, so a burst of guesses cannot all pass the
    lock check before the first failure is counted.
    """
    member = staff.get(staff_id)
    key = member.id if member is not None else ""  # unknown ids share one queue, and no table rows
    lock = _SIGN_IN_LOCKS.setdefault(key, asyncio.Lock())
    async with lock:
        return await _sign_in(journal, member, device_id, staff_id, pin)


async def _sign_in(
    journal: Journal, member: StaffMember | None, device_id: str, staff_id: str, pin: str
) -> tuple[str, datetime, StaffMember]:
    now = datetime.now(UTC)

    def locked_until(conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT locked_until FROM pin_failures WHERE staff_id = ?", (staff_id,)).fetchone()
        return row[0] if row and row[0] and row[0] > _iso(now) else None

    until = await journal.read(locked_until)
    if until is not None:
        raise AccessError(f"too many wrong PINs; {staff_id} is locked until {until}", status=423)
    stored = member.pin_hash if member is not None else _DUMMY_PIN_HASH
    async with _VERIFY_SLOTS:
        ok = await asyncio.to_thread(_verify, stored, pin) and member is not None
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    expires = now + SESSION_TTL

    def record(conn: sqlite3.Connection) -> None:
        if not ok:
            if member is None:
                return  # nothing to lock, and no row per made-up id
            failures = conn.execute(
                "INSERT INTO pin_failures (staff_id, failures) VALUES (?, 1) "
                "ON CONFLICT (staff_id) DO UPDATE SET failures = failures + 1 RETURNING failures",
                (staff_id,),
            ).fetchone()[0]
            if failures >= MAX_PIN_FAILURES:
                conn.execute(
                    "UPDATE pin_failures SET failures = 0, locked_until = ? WHERE staff_id = ?",
                    (_iso(now + PIN_LOCK), staff_id),
                )
            return
        conn.execute("DELETE FROM pin_failures WHERE staff_id = ?", (staff_id,))
        conn.execute("DELETE FROM sessions WHERE expires_at < ?", (_iso(now),))
        conn.execute(
            "INSERT INTO sessions (token_hash, staff_id, device_id, expires_at) VALUES (?, ?, ?, ?)",
            (_sha(token), staff_id, device_id, _iso(expires)),
        )

    await journal.transaction(record)
    if not ok or member is None:
        raise AccessError("wrong staff id or PIN", status=401)
    return token, expires, member


async def sign_out(journal: Journal, token: str) -> None:
    """End a session."""
    await journal.transaction(
        lambda conn: conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_sha(token),))
    )


def _verify(stored: str, pin: str) -> bool:
    try:
        return _hasher.verify(stored, pin)
    except (VerificationError, InvalidHashError):
        return False


def load_staff(path: Path) -> StaffDocument:
    """Read the staff snapshot; a missing file is an empty staff list."""
    doc = read_document(path, StaffDocument)
    return doc if doc is not None else StaffDocument(version=0, staff=[])


def add_staff(path: Path, staff_id: str, name: str, role: Role | str, pin: str) -> StaffMember:
    """Add or replace a staff member in the snapshot file (CLI, until the hub syncs staff)."""
    member = StaffMember(id=staff_id, name=name, role=Role(role), pin_hash=hash_pin(pin))
    current = load_staff(path)
    others = [s for s in current.staff if s.id != staff_id]
    write_document(path, StaffDocument(version=current.version + 1, staff=[*others, member]))
    return member
