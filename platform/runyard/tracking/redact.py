"""Keep secrets out of tracked params, tags and printed job info.

A spec's config, an env var dict or a runtime_env can carry an API key or a password; logged as an
MLflow param it would be readable by everyone who can read the experiment, forever. `redact`
replaces the VALUE of every key that looks like a secret with a fixed marker and keeps the key, so
the run still records that the setting existed.

A key looks like a secret when one of its words (split on `.`, `_`, `-`, `/` and camelCase) is
one of SECRET_WORDS, or it ends in one of them (`apikey`, `authtoken`). Words like `keep`,
`keys_per_batch` or `monkey` do not match: only whole words do, and the plural `keys` is allowed.
Values that look like credentials whatever their key (a URI with `user:password@`, a bearer
token) are redacted too.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

REDACTED = "***REDACTED***"

SECRET_WORDS = (
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "key",
    "apikey",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "cookie",
)

# Compound words written without a separator: "apikey", "authtoken", "clientsecret".
_SECRET_SUFFIXES = ("token", "password", "passwd", "secret", "apikey", "credential", "credentials")

_WORD_BOUNDARY = re.compile(r"[._\-/\s:]+|(?<=[a-z0-9])(?=[A-Z])")
_URI_WITH_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}")


def is_secret_key(key: str) -> bool:
    """True when the key's name says its value is a credential."""
    words = [w.lower() for w in _WORD_BOUNDARY.split(str(key)) if w]
    for word in words:
        if word in SECRET_WORDS:
            return True
        if any(word.endswith(suffix) and word != suffix for suffix in _SECRET_SUFFIXES):
            return True
    return False


def redact_value(value: str) -> str:
    """Blank out credentials embedded in a string value (URI passwords, bearer tokens)."""
    value = _URI_WITH_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", value)


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `mapping` (nested dicts and lists included) with secret values replaced.

    Keys are kept; a secret key's value becomes REDACTED whatever its type (a nested dict under a
    key named `credentials` is dropped whole). String values under other keys still lose embedded
    URI passwords and bearer tokens.
    """
    return {key: _redact_item(key, value) for key, value in mapping.items()}


def _redact_item(key: str, value: Any) -> Any:
    if is_secret_key(key):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_item("", item) for item in value)
    if isinstance(value, str):
        return redact_value(value)
    return value
