"""MongoDB adapter for the web app's credentials: `users` and `api_keys`, secrets hashed.

`users`: `_id` = user name; an argon2 hash of the password, a role and a session epoch (raised
to end every session of the user: logout, a new password, a new role).
`api_keys`: `_id` = the key's public id (the part before the secret); a SHA-256 of the whole key
and a role. Nothing here can give back a password or a key.
`login_failures`: one document per failed login and key it counts under (`key`, `at`), so every
replica of the app counts the same failures. Plain finds, inserts and deletes (nx-27017 too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from telescore.io.mongodb import Document, MongoStore

USERS: Final = "users"
API_KEYS: Final = "api_keys"
LOGIN_FAILURES: Final = "login_failures"
SESSION_EPOCH = "session_epoch"
"""Field of a user document (not a collection): a user's count of ended sessions; a session
cookie names the epoch it began in."""


class AlreadyExistsError(ValueError):
    """A user or key with this id exists already."""


class AccessStore(MongoStore):
    """Users and API keys in one database; use as a context manager."""

    appname = "telescore-app"

    @property
    def users(self) -> Collection[Document]:
        """The `users` collection."""
        return self._collection(USERS)

    @property
    def api_keys(self) -> Collection[Document]:
        """The `api_keys` collection."""
        return self._collection(API_KEYS)

    def add_user(self, user: Mapping[str, Any]) -> None:
        """Store a new user; raise AlreadyExistsError if the name is taken."""
        try:
            self.users.insert_one(dict(user))
        except DuplicateKeyError:
            raise AlreadyExistsError(f"user {user['_id']!r} exists already") from None

    def set_password_hash(self, name: str, password_hash: str) -> bool:
        """Replace a user's password hash, ending their sessions; False if there is no such user."""
        result = self.users.update_one(
            {"_id": name},
            {"$set": {"password_hash": password_hash}, "$inc": {SESSION_EPOCH: 1}},
        )
        return result.matched_count == 1

    def set_role(self, name: str, role: str) -> bool:
        """Change a user's role, ending their sessions; False if there is no such user."""
        result = self.users.update_one(
            {"_id": name}, {"$set": {"role": role}, "$inc": {SESSION_EPOCH: 1}}
        )
        return result.matched_count == 1

    def end_sessions(self, name: str) -> bool:
        """End every session of a user (their cookies name an older epoch); False if none."""
        result = self.users.update_one({"_id": name}, {"$inc": {SESSION_EPOCH: 1}})
        return result.matched_count == 1

    def session_state(self, name: str) -> Document | None:
        """Return a user's role and session epoch (not the password hash), if the user exists."""
        return self.users.find_one({"_id": name}, {"role": 1, SESSION_EPOCH: 1})

    def user(self, name: str) -> Document | None:
        """Return a user, if one has this name."""
        return self.users.find_one({"_id": name})

    def add_api_key(self, key: Mapping[str, Any]) -> None:
        """Store a new API key record; raise AlreadyExistsError if its id is taken."""
        try:
            self.api_keys.insert_one(dict(key))
        except DuplicateKeyError:
            raise AlreadyExistsError(f"API key {key['_id']!r} exists already") from None

    def api_key(self, key_id: str) -> Document | None:
        """Return an API key record by its public id."""
        return self.api_keys.find_one({"_id": key_id})

    @property
    def login_failures(self) -> Collection[Document]:
        """The `login_failures` collection."""
        return self._collection(LOGIN_FAILURES)

    def ensure_indexes(self) -> None:
        """Create the index failed logins are counted by (idempotent)."""
        self.login_failures.create_index([("key", ASCENDING), ("at", ASCENDING)])

    def failures_since(self, keys: Iterable[str], since: datetime) -> dict[str, list[datetime]]:
        """Return the times of the failed logins counted under each key, since `since`."""
        wanted = list(keys)
        found: dict[str, list[datetime]] = {key: [] for key in wanted}
        cursor = self.login_failures.find(
            {"key": {"$in": wanted}, "at": {"$gt": since}}, {"_id": 0, "key": 1, "at": 1}
        )
        for failure in cursor:
            found.setdefault(failure["key"], []).append(failure["at"])
        return found

    def add_failure(self, keys: Iterable[str], at: datetime, forget_before: datetime) -> None:
        """Count a failed login under each key; forget failures older than `forget_before`."""
        self.login_failures.insert_many([{"key": key, "at": at} for key in keys])
        # Failures past the window count no more: cleaned up here, on failures only.
        self.login_failures.delete_many({"at": {"$lt": forget_before}})

    def forget_failures(self, key: str) -> None:
        """Forget the failed logins counted under `key` (a user who just logged in)."""
        self.login_failures.delete_many({"key": key})
