"""Who may do what in the web app: roles, principals and the shape of an API key (pure).

Three roles: a `caller` scores prospects and records the calls they made (each call's outcome is
the outcome of the prediction shown); an `integration` (a CRM, a replay) reports outcomes in bulk
through the outcomes API, and nothing else; `ops` may do all that, and change the indicators and
the release routing. Outcomes decide promotions, so reporting them is not every caller's.
A person logs in with a password (the page); a program presents an API key (the JSON API). Both
resolve to a `Principal`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

Role = Literal["caller", "integration", "ops"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
_GRANTS: Final[dict[str, frozenset[str]]] = {
    "caller": frozenset({"caller"}),
    "integration": frozenset({"integration"}),
    "ops": frozenset(ROLES),
}

API_KEY_HEADER: Final = "X-API-Key"
"""The header a program sends its API key in."""
API_KEY_PREFIX: Final = "tsk"
"""Every key starts `tsk_`: easy to spot in a leaked log, and by secret scanners."""
_API_KEY: Final = re.compile(rf"^{API_KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{32,}})$")
USER_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH: Final = 10


@dataclass(frozen=True)
class Principal:
    """Someone the app knows: a user logged in, or a program with an API key."""

    name: str
    """User name, or the API key's public id."""
    role: Role
    kind: Literal["user", "api_key"]


def allows(role: Role, needed: Role) -> bool:
    """Tell whether `role` may do what needs `needed` (ops may do what every role may)."""
    return needed in _GRANTS.get(role, frozenset())


def api_key_id(key: str) -> str | None:
    """Return the public id of a well-formed API key, or None if it is not one."""
    match = _API_KEY.match(key)
    return match.group(1) if match else None


def format_api_key(key_id: str, secret: str) -> str:
    """Assemble an API key from its public id (12 hex digits) and its secret."""
    key = f"{API_KEY_PREFIX}_{key_id}_{secret}"
    if api_key_id(key) != key_id:
        raise ValueError("an API key id is 12 hex digits and its secret 32+ URL-safe characters")
    return key


def check_user_name(name: str) -> str:
    """Return the name if it is a valid user name, else raise ValueError saying why."""
    if not USER_NAME.match(name):
        raise ValueError(
            "a user name is 2-64 lower-case letters, digits, dots, dashes or underscores"
        )
    return name


def check_password(password: str) -> str:
    """Return the password if it is long enough, else raise ValueError saying why."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    return password
