"""The shipped JSON-LD context and JSON Schema, and full JSON Schema validation (strict mode)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from .codec import DEFAULT_LIMITS, Limits, load_json
from .errors import MalformedReceiptError, UnknownContextError
from .model import CONTEXT_V1, CONTEXT_V2

SCHEMA_FILE = "receipt.schema.json"
CONTEXT_FILE = "context-v1.jsonld"
CONTEXT_V2_FILE = "context-v2.jsonld"


def _read(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath("_spec", name).read_text("utf-8"))


@cache
def receipt_schema() -> dict[str, Any]:
    """The receipt v1/v2 JSON Schema (draft 2020-12) shipped with the verifier."""
    schema: dict[str, Any] = _read(SCHEMA_FILE)
    return schema


@cache
def known_contexts() -> dict[str, Any]:
    """JSON-LD contexts by URL, from shipped files only: the verifier never fetches one."""
    return {CONTEXT_V1: _read(CONTEXT_FILE), CONTEXT_V2: _read(CONTEXT_V2_FILE)}


def validate_schema(data: bytes | str | Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> None:
    """Validate against the JSON Schema with ``jsonschema`` (slow; the codec is the fast path)."""
    import jsonschema

    doc = load_json(data, limits) if isinstance(data, bytes | str) else data
    if isinstance(doc, Mapping) and doc.get("@context") not in known_contexts():
        raise UnknownContextError(f"@context {doc.get('@context')!r:.100} is not supported")
    validator = jsonschema.Draft202012Validator(receipt_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "receipt"
        raise MalformedReceiptError(f"{where}: {error.message} (JSON Schema)")
