"""Request bodies and query strings: one small validator for every handler.

Errors are collected per field and raised together as `ValidationFailed`,
so a client sees every problem of a form in one response.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web

from unimatch.domain.errors import ValidationFailed

T = TypeVar("T")
_MISSING = object()
MAX_JSON_BYTES = 64 * 1024


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or 400 `invalid_json`."""
    raw = await request.read()
    if len(raw) > MAX_JSON_BYTES:
        raise ValidationFailed({"body": ["body too large"]}, code="invalid_json")
    if not raw:
        raise ValidationFailed({"body": ["a JSON object is required"]}, code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed({"body": ["malformed JSON"]}, code="invalid_json") from None
    if not isinstance(data, dict):
        raise ValidationFailed({"body": ["a JSON object is required"]}, code="invalid_json")
    return data


class Fields:
    """Typed access to a mapping of inputs, collecting errors per field."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.errors: dict[str, list[str]] = {}

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, required: bool) -> Any:
        value = self.data.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                self.error(name, "this field is required")
            return _MISSING
        return value

    def string(
        self,
        name: str,
        *,
        required: bool = True,
        min_len: int = 0,
        max_len: int | None = None,
        strip: bool = True,
        default: str | None = None,
    ) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.error(name, "must be a string")
            return default
        if strip:
            value = value.strip()
        if len(value) < min_len:
            message = "may not be empty" if min_len == 1 else f"at least {min_len} characters"
            self.error(name, message)
            return default
        if max_len is not None and len(value) > max_len:
            self.error(name, f"at most {max_len} characters")
            return default
        return value

    def integer(
        self,
        name: str,
        *,
        required: bool = True,
        minimum: int | None = None,
        maximum: int | None = None,
        default: int | None = None,
    ) -> int | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, "must be an integer")
            return default
        if minimum is not None and value < minimum:
            self.error(name, f"must be at least {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.error(name, f"must be at most {maximum}")
            return default
        return value

    def boolean(
        self, name: str, *, required: bool = True, default: bool | None = None
    ) -> bool | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
            return value.lower() in {"true", "1"}
        if not isinstance(value, bool):
            self.error(name, "must be true or false")
            return default
        return value

    def uuid(self, name: str, *, required: bool = True) -> uuid.UUID | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        try:
            return uuid.UUID(str(value)) if isinstance(value, str) else _raise()
        except (ValueError, TypeError):
            self.error(name, "must be a UUID")
            return None

    def choice(self, name: str, choices: Iterable[str], *, required: bool = True) -> str | None:
        allowed = tuple(choices)
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if value not in allowed:
            self.error(name, "must be one of: " + ", ".join(allowed))
            return None
        return value

    def date(self, name: str, *, required: bool = True) -> dt.date | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        try:
            if not isinstance(value, str) or len(value) != 10:
                raise ValueError
            return dt.date.fromisoformat(value)
        except ValueError:
            self.error(name, "must be a date as YYYY-MM-DD")
            return None

    def datetime(self, name: str, *, required: bool = True) -> dt.datetime | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        try:
            if not isinstance(value, str):
                raise ValueError
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.error(name, "must be an ISO 8601 date-time")
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed

    def items(
        self,
        name: str,
        parse: Callable[[Any], T],
        *,
        required: bool = True,
        min_items: int = 0,
        max_items: int | None = None,
        unique: bool = True,
    ) -> list[T] | None:
        """A list whose items `parse` converts (raising ValueError when bad)."""
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, list):
            self.error(name, "must be a list")
            return None
        try:
            parsed = [parse(item) for item in value]
        except (ValueError, TypeError) as exc:
            self.error(name, str(exc) or "has an invalid item")
            return None
        if unique and len(set(map(str, parsed))) != len(parsed):
            self.error(name, "items must be unique")
            return None
        if len(parsed) < min_items:
            self.error(name, f"at least {min_items} items")
            return None
        if max_items is not None and len(parsed) > max_items:
            self.error(name, f"at most {max_items} items")
            return None
        return parsed

    def check(self) -> None:
        """Raise every collected error at once."""
        if self.errors:
            raise ValidationFailed(self.errors)


def _raise() -> Any:
    raise ValueError


def parse_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError("items must be UUIDs")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError("items must be UUIDs") from None


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    """A UUID from the URL; a malformed one is simply not found."""
    from unimatch.domain.errors import NotFound

    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise NotFound(f"no such {name.removesuffix('_id')}") from None


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=_default),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
