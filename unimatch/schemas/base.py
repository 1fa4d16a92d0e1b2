"""Model bases, and pydantic's errors in the contract's words.

A request body is validated strictly from its JSON (an integer field refuses
`true` and `"7"`); a query string leniently (its values are all strings).
`detail_of` turns a pydantic `ValidationError` into the contract's 400
`detail`: `{"field": ["message", ...]}`, every field at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from unimatch.schemas import limits


class Body(BaseModel):
    """A JSON request body. Unknown fields are ignored (clients may be newer)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Query(BaseModel):
    """A query string: values arrive as strings and are converted."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Out(BaseModel):
    """A response body or a server frame, as documented: the document says
    exactly which fields it has."""

    model_config = ConfigDict(extra="forbid")


class OpenOut(BaseModel):
    """A response object that may grow fields (catalogue entries, cards)."""

    model_config = ConfigDict(extra="allow")


def field_error(field: str, message: str) -> PydanticCustomError:
    """For a model validator: an error filed under `field` (a model
    validator's own errors have no location)."""
    return PydanticCustomError("field", message, {"field": field})


def _unique(items: list[Any]) -> list[Any]:
    if len(set(items)) != len(items):
        raise PydanticCustomError("unique", "items must be unique")
    return items


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


Seq = Annotated[int, Field(ge=limits.SEQ_MIN, le=limits.SEQ_MAX)]
# A datetime in; a naive one is taken as UTC.
Instant = Annotated[dt.datetime, AfterValidator(_utc)]


# `Annotated[list[X], UNIQUE, Field(..., json_schema_extra=UNIQUE_ITEMS)]`: a
# list of distinct items (a JSON array with uniqueItems).
UNIQUE = AfterValidator(_unique)
UNIQUE_ITEMS: dict[str, Any] = {"uniqueItems": True}




# -- errors in the contract's words ----------------------------------------------

_TYPE_MESSAGES = {
    "missing": "this field is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "must be a UUID",
    "uuid_version": "must be a UUID",
    "date_type": "must be a date as YYYY-MM-DD",
    "date_parsing": "must be a date as YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a date as YYYY-MM-DD",
    "date_from_datetime_inexact": "must be a date as YYYY-MM-DD",
    "datetime_type": "must be an ISO 8601 date-time",
    "datetime_parsing": "must be an ISO 8601 date-time",
    "datetime_from_date_parsing": "must be an ISO 8601 date-time",
    "datetime_object_invalid": "must be an ISO 8601 date-time",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "extra_forbidden": "unknown field",
    "string_pattern_mismatch": "has the wrong format",
    "literal_error": "must be one of: {expected}",
    "enum": "must be one of: {expected}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "greater_than": "must be more than {gt}",
    "less_than": "must be less than {lt}",
    "too_short": "at least {min_length} items",
    "too_long": "at most {max_length} items",
    "string_too_long": "at most {max_length} characters",
    "bool": "must be true or false",
}


def message_of(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = dict(error.get("ctx") or {})
    if isinstance(error.get("input"), str) and kind in ("too_short", "too_long"):
        kind = "string_" + kind
    if kind == "string_too_short":
        minimum = ctx.get("min_length", 1)
        return "may not be empty" if minimum == 1 else f"at least {minimum} characters"
    if kind in ("literal_error", "enum"):
        ctx["expected"] = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
    template = _TYPE_MESSAGES.get(kind)
    if template is None:
        return error["msg"]
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return error["msg"]


def field_of(error: ErrorDetails, default: str = "body") -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "field" and "field" in ctx:
        return str(ctx["field"])
    loc = [part for part in error["loc"] if isinstance(part, str)]
    # A union's member names its type in the location: skip such parts.
    return loc[0] if loc else default


def detail_of(
    exc: ValidationError, *, model: type[BaseModel] | None = None, default: str = "body"
) -> dict[str, list[str]]:
    """`{"field": ["message", ...]}` for every error pydantic found; an
    unknown field of `model` is told the fields there are."""
    detail: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        messages = detail.setdefault(field_of(error, default), [])
        message = message_of(error)
        if error["type"] == "extra_forbidden" and model is not None:
            message = "unknown field: one of " + ", ".join(model.model_fields)
        if message not in messages:
            messages.append(message)
    return detail
