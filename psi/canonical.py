"""Canonical JSON: the one byte form that audit hashes and signatures are taken over."""

import hashlib
import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder


def to_jsonable(value: Any) -> Any:
    """Dates, decimals and UUIDs become strings, as they will be stored."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value,
        cls=DjangoJSONEncoder,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()
