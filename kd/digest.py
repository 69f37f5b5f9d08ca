"""Short fingerprints: a truncated sha256 names a cache entry and tells a stage or an export whether it is current."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def short_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def json_fingerprint(value: Any) -> str:
    """The truncated sha256 of `value` as canonical JSON (keys sorted): equal values, equal fingerprints."""
    return short_sha256(json.dumps(value, sort_keys=True))
