"""Mosquitto password and ACL files for a chain's stores.

`storelink-hub store add` keeps them current so a Mosquitto 2 broker enforces the same rule
as the embedded one: a store (user name = store id) may use only `storelink/v1/<id>/#`;
the hub's account may use everything. Mosquitto re-reads both files on SIGHUP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["ACL_TEXT", "password_line", "write_acl", "write_password"]

_ITERATIONS = 101  # Mosquitto's own default; the passwords are 192 random bits anyway


def password_line(user: str, password: str) -> str:
    """A Mosquitto 2 `password_file` line (`$7$`: PBKDF2-SHA512)."""
    if not user or ":" in user or "\n" in user:
        raise ValueError(f"{user!r} cannot be a Mosquitto user name")
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    encoded = f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    return f"{user}:{encoded}"


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_password(path: Path, user: str, password: str) -> None:
    """Add or replace one user's line, keeping everyone else's (atomic rewrite)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in lines if line.split(":", 1)[0] != user]
    _replace(path, "\n".join([*kept, password_line(user, password)]) + "\n")


ACL_TEXT = """# Written by storelink-hub. Stores sign in with their store id as user name.
user {hub_user}
topic readwrite storelink/v1/#

pattern readwrite storelink/v1/%u/#
"""


def write_acl(path: Path, hub_user: str) -> None:
    """The chain's ACL: the hub everywhere, each store only under its own topic root."""
    if not hub_user or any(c.isspace() for c in hub_user):
        raise ValueError(f"{hub_user!r} cannot be the hub's Mosquitto user name")
    _replace(path, ACL_TEXT.format(hub_user=hub_user))
