"""Request bodies read into the typed models of :mod:`ca.api.schemas`, with problem+json errors.

The strict JSON parser (:func:`ca.api.bodies.json_body`: media type, UTF-8, depth, duplicate
keys, NaN, NUL) runs first; the model then checks members and types. A model failure becomes
``bad-request`` whose detail names the member; pydantic's own error format never reaches a
client. Validators that know a more precise code (``invalid-validity``, ``invalid-digest``)
raise :class:`~ca.errors.CAError` themselves.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TypeVar

from flask import request
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ca.api.bodies import json_body
from ca.api.schemas import MAX_SECONDS, RequestBody
from ca.errors import CAError, ErrorCode

M = TypeVar("M", bound=RequestBody)
_DECIMAL = re.compile(r"[0-9]{1,12}")  # int() takes " 10", "+1_0", non-ASCII digits

_TYPE_NAMES = {
    "string_type": "str",
    "int_type": "int",
    "bool_type": "bool",
    "list_type": "list",
}


def read_body(model: type[M], optional: bool = False) -> M:
    """The request's JSON body as ``model``; an ``optional`` body may be empty (defaults)."""
    if optional and not request.get_data(cache=True):
        return model()
    return parse(model, json_body())


def parse(model: type[M], data: dict[str, object]) -> M:
    """Validate an already parsed JSON object (pure)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # a misspelt member is also a missing one: name the misspelling, the likelier cause
        unknown = [e for e in errors if e["type"] == "extra_forbidden"]
        raise CAError(ErrorCode.BAD_REQUEST, describe((unknown or errors)[0])) from None


def describe(error: ErrorDetails) -> str:
    """One pydantic error as the detail of a problem, naming the member."""
    loc = error["loc"]
    name = str(loc[0]) if loc else "body"
    kind = error["type"]
    if kind == "missing":
        return f"'{name}' is required"
    if kind == "extra_forbidden":
        return f"unknown member '{name[:64]}'"
    if len(loc) > 1 and isinstance(loc[1], int) and kind == "string_type":
        return f"'{name}' must be a list of strings"
    if kind == "int_type":
        return f"'{name}' must be an integer"
    if kind in _TYPE_NAMES:
        return f"'{name}' must be of type {_TYPE_NAMES[kind]}"
    if kind == "literal_error":
        return f"'{name}' must be {error['ctx']['expected']}"
    return f"'{name}': {error['msg']}"


def timedelta_or_none(value: int | None) -> timedelta | None:
    """A validated :data:`~ca.api.schemas.Seconds` member as a duration."""
    return None if value is None else timedelta(seconds=value)


def query_seconds(name: str) -> timedelta | None:
    """An optional query parameter holding a positive number of seconds."""
    raw = request.args.get(name)
    if not raw:
        return None
    if not _DECIMAL.fullmatch(raw):
        raise CAError(ErrorCode.BAD_REQUEST, f"{name} must be an integer")
    value = int(raw)
    if value <= 0 or value > MAX_SECONDS:
        raise CAError(ErrorCode.INVALID_VALIDITY, f"'{name}' must be a positive number of seconds")
    return timedelta(seconds=value)
