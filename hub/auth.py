"""Head-office access: users, argon2 passwords, bearer tokens, roles and store scope.

Every permission check of every hub domain goes through `Principal.require`, so a role's
reach is decided in this one file.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update

from hub.db import Database
from hub.errors import AuthError, NotFound, PermissionDenied
from hub.models import ApiToken, Store, User, UserStore

__all__ = [
    "LoginLimiter",
    "Principal",
    "Role",
    "TokenIssued",
    "add_user",
    "authenticate",
    "hash_secret",
    "issue_token",
    "resolve_token",
    "revoke_token",
    "verify_secret",
]

_KEEP_DEAD = timedelta(days=1)
TOKEN_PREFIX = "slh_"  # noqa: S105 - a prefix that secret scanners can match, not a secret
_hasher = PasswordHasher()
# Each argon2 verify takes ~64 MiB; a few at a time keep a sign-in flood from exhausting RAM.
_VERIFY_SLOTS = asyncio.Semaphore(4)
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    """Head-office roles."""

    OWNER = "owner"
    REGIONAL = "regional"
    STORE_MANAGER = "store-manager"
    MARKETING = "marketing"
    FINANCE = "finance"


# Roles that see the whole chain unless given a store list; the others must be given one.
_CHAIN_WIDE = {Role.OWNER, Role.MARKETING, Role.FINANCE}

PERMISSIONS: dict[str, frozenset[Role]] = {
    "stores.read": frozenset(Role),
    "sales.read": frozenset(Role),
    "snapshots.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "commands.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "stores.write": frozenset({Role.OWNER}),
    "users.write": frozenset({Role.OWNER}),
    "stored_value.read": frozenset({Role.OWNER, Role.FINANCE, Role.REGIONAL, Role.STORE_MANAGER}),
    "stored_value.write": frozenset({Role.OWNER, Role.FINANCE}),
    "stored_value.refund": frozenset({Role.OWNER, Role.FINANCE}),
    "members.read": frozenset(Role),
    "members.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER, Role.MARKETING}),
    "passes.read": frozenset(Role),
    "passes.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "loyalty.read": frozenset(Role),
    "loyalty.configure": frozenset({Role.OWNER, Role.MARKETING}),
    "stock.read": frozenset(Role),
    "stock.adjust": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "transfers.read": frozenset(Role),
    "transfers.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "transfers.approve": frozenset({Role.OWNER, Role.REGIONAL}),
    "replenishment.read": frozenset(Role),
    "replenishment.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "suppliers.read": frozenset(Role),
    "suppliers.write": frozenset({Role.OWNER, Role.REGIONAL}),
    "purchasing.read": frozenset(Role),
    "purchasing.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "stocktakes.read": frozenset(Role),
    "stocktakes.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "stocktakes.approve": frozenset({Role.OWNER, Role.REGIONAL}),
    # appointments (智能预约): store staff for their stores, head office everywhere; services are chain-wide
    "appointments.read": frozenset(Role),
    "appointments.write": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "appointments.configure": frozenset({Role.OWNER}),
    "catalog.read": frozenset(Role),
    "catalog.write": frozenset({Role.OWNER, Role.REGIONAL}),
    "catalog.price": frozenset({Role.OWNER, Role.REGIONAL}),
    "catalog.link": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "catalog.publish": frozenset({Role.OWNER, Role.REGIONAL, Role.STORE_MANAGER}),
    "jobs.read": frozenset({Role.OWNER}),
    "jobs.run": frozenset({Role.OWNER}),
    "promotions.read": frozenset(Role),
    "promotions.write": frozenset({Role.OWNER, Role.MARKETING}),
    "coupons.read": frozenset(Role),
    "coupons.write": frozenset({Role.OWNER, Role.MARKETING}),
    # campaigns and group buys (拼团): marketing and the owner author; whoever takes a payment records a join
    "campaigns.read": frozenset(Role),
    "campaigns.write": frozenset({Role.OWNER, Role.MARKETING}),
    "group_buy.read": frozenset(Role),
    "group_buy.write": frozenset({Role.OWNER, Role.MARKETING}),
    "group_buy.join": frozenset({Role.OWNER, Role.MARKETING, Role.REGIONAL, Role.STORE_MANAGER}),
    # referrals, points mall, lucky wheel: marketing and the owner configure; whoever serves a member redeems
    "referrals.read": frozenset(Role),
    "referrals.write": frozenset({Role.OWNER, Role.MARKETING}),
    "referrals.register": frozenset({Role.OWNER, Role.MARKETING, Role.REGIONAL, Role.STORE_MANAGER}),
    "mall.read": frozenset(Role),
    "mall.write": frozenset({Role.OWNER, Role.MARKETING}),
    "mall.redeem": frozenset({Role.OWNER, Role.MARKETING, Role.REGIONAL, Role.STORE_MANAGER}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: `stores` is None for chain-wide access."""

    user_id: int
    name: str
    role: Role
    stores: frozenset[str] | None

    def can_see(self, store_id: str) -> bool:
        """True if the store is in this user's scope."""
        return self.stores is None or store_id in self.stores

    def require(self, permission: str, *, store: str | None = None) -> None:
        """Raise `PermissionDenied` unless the role has `permission` (for `store`, if given)."""
        allowed = PERMISSIONS.get(permission)
        if allowed is None:
            raise KeyError(f"unknown permission {permission!r}")
        if self.role not in allowed:
            raise PermissionDenied(f"role '{self.role}' may not {permission}")
        if store is not None and not self.can_see(store):
            raise PermissionDenied(f"user '{self.name}' has no access to store '{store}'")


def hash_secret(secret: str) -> str:
    """Argon2id hash of a password (CPU-heavy: call from a thread in async code)."""
    return _hasher.hash(secret)


def verify_secret(stored_hash: str, secret: str) -> bool:
    """True if `secret` matches `stored_hash`."""
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenIssued:
    """A new bearer token; the clear text exists only in this object."""

    token: str
    expires_at: datetime


async def add_user(
    db: Database, name: str, password: str, role: Role | str, stores: list[str] | None = None
) -> User:
    """Create a head-office user, checking role and store scope before anything is written."""
    try:
        role = Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role '{role}'; choose one of {choices}") from None
    stores = sorted(set(stores or []))
    if not name or len(name) > 64 or not name.isprintable():
        raise ValueError("user name must be 1-64 printable characters")
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    if role is Role.OWNER and stores:
        raise ValueError("an owner sees every store; do not give --stores")
    if role not in _CHAIN_WIDE and not stores:
        raise ValueError(f"role '{role}' needs --stores with at least one store id")
    password_hash = await asyncio.to_thread(hash_secret, password)
    async with db.session() as session, session.begin():
        if stores:
            known = set((await session.scalars(select(Store.id).where(Store.id.in_(stores)))).all())
            missing = [s for s in stores if s not in known]
            if missing:
                raise NotFound(f"unknown store(s): {', '.join(missing)}; add them first")
        if await session.scalar(select(User.id).where(User.name == name)) is not None:
            raise ValueError(f"user '{name}' already exists")
        user = User(
            name=name,
            password_hash=password_hash,
            role=role.value,
            disabled=False,
            created_at=datetime.now(UTC),
            stores=[UserStore(store_id=s) for s in stores],
        )
        session.add(user)
    return user


async def set_password(db: Database, name: str, password: str) -> None:
    """Replace a user's password and revoke every token they hold."""
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    password_hash = await asyncio.to_thread(hash_secret, password)
    now = datetime.now(UTC)
    async with db.session() as session, session.begin():
        user = await session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user named '{name}'")
        user.password_hash = password_hash
        await session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )


async def authenticate(db: Database, name: str, password: str) -> User:
    """Return the user if the password matches, else raise `AuthError` (same for any cause)."""
    async with db.session() as session:
        user = await session.scalar(select(User).where(User.name == name))
    stored = user.password_hash if user is not None else _DUMMY_HASH
    async with _VERIFY_SLOTS:
        ok = await asyncio.to_thread(verify_secret, stored, password)
    if user is None or not ok or user.disabled:
        raise AuthError("wrong user name or password")
    return user


async def issue_token(db: Database, user_id: int, ttl: timedelta) -> TokenIssued:
    """Create a bearer token for `user_id` that expires after `ttl`."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    async with db.session() as session, session.begin():
        # Tokens dead for a day are of no use even for auditing "why was I signed out".
        await session.execute(
            delete(ApiToken).where(
                (ApiToken.expires_at < now - _KEEP_DEAD) | (ApiToken.revoked_at < now - _KEEP_DEAD)
            )
        )
        session.add(
            ApiToken(
                token_hash=_token_hash(token),
                user_id=user_id,
                created_at=now,
                expires_at=now + ttl,
                revoked_at=None,
            )
        )
    return TokenIssued(token=token, expires_at=now + ttl)


async def resolve_token(db: Database, token: str) -> Principal:
    """Map a bearer token to its principal, or raise `AuthError`."""
    now = datetime.now(UTC)
    async with db.session() as session:
        row = await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == _token_hash(token))
        )
        found = row.first()
    if found is None:
        raise AuthError("unknown token; sign in again at POST /api/v1/auth/token")
    api_token, user = found
    if api_token.revoked_at is not None:
        raise AuthError("token was revoked; sign in again")
    if api_token.expires_at <= now:
        raise AuthError("token expired; sign in again")
    if user.disabled:
        raise AuthError(f"user '{user.name}' is disabled")
    role = Role(user.role)
    scope = frozenset(s.store_id for s in user.stores)
    stores = None if role in _CHAIN_WIDE and not scope else scope
    return Principal(user_id=user.id, name=user.name, role=role, stores=stores)


async def revoke_token(db: Database, token: str) -> None:
    """Revoke one token so it can no longer be used."""
    async with db.session() as session, session.begin():
        await session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == _token_hash(token), ApiToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )


class LoginLimiter:
    """Sign-in attempts per (name, client address) and per address, in a sliding window.

    An attempt is counted before its password is checked and forgiven only when it
    succeeds, so parallel guesses cannot slip past the limit while argon2 runs. The
    per-address cap (10 x per name) stops spraying many names from one address, and
    bounds how fast one address can push other keys out of the table. At most
    `max_keys` keys are kept, least recently used evicted first. Per process: with
    several hub instances the limits apply per instance.
    """

    def __init__(self, max_failures: int, window_s: float, *, max_keys: int = 10_000):
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._attempts: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._attempts.get(key, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def _keys(self, name: str, client: str) -> list[tuple[tuple[str, str], int]]:
        return [
            ((name.casefold(), client), self.max_failures),
            (("", client), self.max_failures * 10),
        ]

    def begin(self, name: str, client: str) -> float:
        """Count an attempt; return 0, or the seconds to wait if over a limit (not counted)."""
        now = time.monotonic()
        waits = []
        for key, limit in self._keys(name, client):
            times = self._recent(key, now)
            if len(times) >= limit:
                waits.append(self.window_s - (now - times[0]))
        if waits:
            return max(0.001, *waits)
        for key, _ in self._keys(name, client):
            times = self._recent(key, now)
            times.append(now)
            self._attempts[key] = times
            self._attempts.move_to_end(key)
        while len(self._attempts) > self.max_keys:
            self._attempts.popitem(last=False)
        return 0.0

    def succeeded(self, name: str, client: str) -> None:
        """Forgive the name's attempts after a good sign-in (the address keeps its count)."""
        self._attempts.pop((name.casefold(), client), None)
