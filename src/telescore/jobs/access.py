"""Users and API keys: create them, and check a password or a key (secrets stored hashed).

Passwords are hashed with argon2id (slow on purpose: a stolen table resists guessing). API keys
carry 192 random bits, so a plain SHA-256 is enough and keeps a request's check to a
microsecond; the key is shown once, at creation, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from telescore.core.access import (
    Principal,
    Role,
    api_key_id,
    check_password,
    check_user_name,
    format_api_key,
)
from telescore.io.access_store import SESSION_EPOCH, AccessStore

_hasher: Final = PasswordHasher()
_DUMMY_HASH: Final = _hasher.hash("telescore: a password nobody has")


@dataclass(frozen=True)
class NewApiKey:
    """A key just created: `key` is shown once and cannot be read back."""

    key_id: str
    key: str
    role: Role
    name: str


def add_user(store: AccessStore, name: str, password: str, role: Role) -> None:
    """Create a user; raise ValueError for a bad name or password, AlreadyExistsError if taken."""
    store.add_user(
        {
            "_id": check_user_name(name),
            "password_hash": _hasher.hash(check_password(password)),
            "role": role,
            "created_at": datetime.now(UTC),
        }
    )


def set_password(store: AccessStore, name: str, password: str) -> bool:
    """Change a user's password and end their sessions; False if there is no such user."""
    return store.set_password_hash(name, _hasher.hash(check_password(password)))


def set_role(store: AccessStore, name: str, role: Role) -> bool:
    """Change a user's role and end their sessions; False if there is no such user."""
    return store.set_role(name, role)


def end_sessions(store: AccessStore, name: str) -> bool:
    """End every session of a user, on every replica; False if there is no such user."""
    return store.end_sessions(name)


@dataclass(frozen=True)
class UserSession:
    """A user as a session sees them: their role now, and the epoch their sessions must name."""

    principal: Principal
    epoch: int


def authenticate(store: AccessStore, name: str, password: str) -> UserSession | None:
    """Return the user if the password is theirs, else None (no hint which part was wrong)."""
    user = store.user(name)
    try:
        # An unknown name costs a hash too: timing does not tell which names exist.
        _hasher.verify(user["password_hash"] if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    return _user_session(user)


def current_session(store: AccessStore, name: str) -> UserSession | None:
    """Return a user's role and session epoch as stored now; None if the user is gone."""
    user = store.session_state(name)
    return _user_session(user) if user is not None else None


def _user_session(user: Mapping[str, Any]) -> UserSession:
    principal = Principal(name=str(user["_id"]), role=user["role"], kind="user")
    return UserSession(principal, int(user.get(SESSION_EPOCH, 0)))


def create_api_key(store: AccessStore, name: str, role: Role) -> NewApiKey:
    """Create an API key for a program; the returned key is the only copy."""
    key_id = secrets.token_hex(6)
    key = format_api_key(key_id, secrets.token_urlsafe(24))
    store.add_api_key(
        {
            "_id": key_id,
            "name": name,
            "role": role,
            "sha256": _digest(key),
            "created_at": datetime.now(UTC),
            "revoked": False,
        }
    )
    return NewApiKey(key_id=key_id, key=key, role=role, name=name)


def verify_api_key(store: AccessStore, key: str) -> Principal | None:
    """Return the key's principal if it is a live key, else None."""
    key_id = api_key_id(key)
    record = store.api_key(key_id) if key_id else None
    if record is None or record.get("revoked"):
        return None
    if not hmac.compare_digest(record["sha256"], _digest(key)):
        return None
    return Principal(name=str(key_id), role=record["role"], kind="api_key")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
