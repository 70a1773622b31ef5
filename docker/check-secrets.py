#!/usr/bin/env python3
"""Refuse to start the platform on a placeholder: exit 1 naming each weak secret, else 0.

Usage: telescore-check-secrets NAME...  Each NAME is an environment variable holding a
secret; a NAME ending in _URI or _URL holds a URI, whose password is checked. A secret is
refused when missing, a placeholder (`changeme`, `<password>`...) or short, by the rules the
telescore services apply to their own settings in production (telescore.settings). It runs
before the data stores start (compose: service `secrets-check`; Kubernetes: an init
container of each StatefulSet), which read secrets telescore's settings do not hold.
"""

import os
import sys

from pydantic import SecretStr

from telescore.settings import ProductionSecret, refuse_weak_secrets


def main(names: list[str]) -> int:
    """Check the secrets named; print what is refused and return the exit status."""
    if not names:
        print("usage: telescore-check-secrets NAME...", file=sys.stderr)
        return 2
    secrets = [
        ProductionSecret(
            name,
            SecretStr(os.environ[name]) if name in os.environ else None,
            in_uri=name.endswith(("_URI", "_URL")),
        )
        for name in names
    ]
    try:
        refuse_weak_secrets(secrets)
    except ValueError as refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    print(f"{len(secrets)} secrets checked: none missing, short or a placeholder")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
