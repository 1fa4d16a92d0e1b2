"""Text a person typed: what is refused and how it is normalised.

Every free-text field of the contract goes through `clean_text`: surrounding
whitespace trimmed; NUL and other control characters refused (newline and tab
allowed where the text may span lines); bidirectional embeddings, overrides
and isolates refused (they make a name or a message display as something else
than it is, "Trojan Source"); then Unicode-normalised, NFC for prose, NFKC for
names (so that look-alike compatibility forms such as full-width letters
become the plain ones). Lengths are counted after that, in code points.

The annotated types below carry those rules into pydantic models; the length
bounds of each field are declared where the field is (see `limits`).
`clean_chat_body` is the one rule for a chat message, for HTTP and WebSocket
alike.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from unimatch.domain.errors import ValidationFailed
from unimatch.schemas import limits

Form = Literal["NFC", "NFKC"]

# Bidirectional embeddings/overrides (U+202A-U+202E) and isolates
# (U+2066-U+2069).
BIDI_CONTROLS = frozenset(
    [*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
)
_LINE_CONTROLS = frozenset("\n\t")
_SINGLE_LINE_ERROR = "line breaks and tabs are not allowed"
_CONTROL_ERROR = "control characters are not allowed"
_BIDI_ERROR = "bidirectional control characters are not allowed"


def text_problem(value: str, *, multiline: bool) -> str | None:
    """Why `value` may not be stored as typed text, or None."""
    if value.isprintable() and not BIDI_CONTROLS.intersection(value):
        return None
    for ch in value:
        if ch in BIDI_CONTROLS:
            return _BIDI_ERROR
        if ch in _LINE_CONTROLS:
            if not multiline:
                return _SINGLE_LINE_ERROR
            continue
        category = unicodedata.category(ch)
        if category == "Cc":
            return _CONTROL_ERROR
        if category == "Cs":
            return "unpaired surrogates are not allowed"
    return None


def clean_text(value: str, *, form: Form = "NFC", multiline: bool = False) -> str:
    """`value` trimmed, checked and normalised; raises ValueError naming the problem."""
    value = unicodedata.normalize(form, value)
    problem = text_problem(value, multiline=multiline)
    if problem is not None:
        raise ValueError(problem)
    return value.strip()


def _validator(form: Form, multiline: bool) -> AfterValidator:
    def check(value: str) -> str:
        try:
            return clean_text(value, form=form, multiline=multiline)
        except ValueError as exc:
            raise PydanticCustomError("text", str(exc)) from None

    return AfterValidator(check)


# One validator per kind of text: names (single line, NFKC) and prose
# (newlines and tabs allowed, NFC).
NAME = _validator("NFKC", multiline=False)
PROSE = _validator("NFC", multiline=True)

DisplayName = Annotated[
    str, NAME, Field(min_length=limits.DISPLAY_NAME_MIN, max_length=limits.DISPLAY_NAME_MAX)
]
Bio = Annotated[str, PROSE, Field(max_length=limits.BIO_MAX)]
ChatBody = Annotated[str, PROSE, Field(min_length=1, max_length=limits.CHAT_BODY_MAX)]
ReportDetails = Annotated[str, PROSE, Field(max_length=limits.REPORT_DETAILS_MAX)]
SuspensionReason = Annotated[
    str, PROSE, Field(min_length=1, max_length=limits.SUSPENSION_REASON_MAX)
]


def clean_chat_body(body: Any) -> str:
    """A chat message's body as stored: a string, trimmed, NFC, 1-2,000
    characters, no control characters but newline and tab, no bidirectional
    controls. Raises `ValidationFailed` with `{"body": [message]}`."""
    if not isinstance(body, str):
        raise ValidationFailed({"body": ["must be a string"]})
    try:
        cleaned = clean_text(body, multiline=True)
    except ValueError as exc:
        raise ValidationFailed({"body": [str(exc)]}) from None
    if not cleaned:
        raise ValidationFailed({"body": ["may not be empty"]})
    if len(cleaned) > limits.CHAT_BODY_MAX:
        raise ValidationFailed({"body": [f"at most {limits.CHAT_BODY_MAX} characters"]})
    return cleaned
