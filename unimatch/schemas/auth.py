"""Signup, verification, sessions and passwords: `/auth/...`, `/me/password`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from unimatch.schemas import limits
from unimatch.schemas.base import Body, OpenOut, Out
from unimatch.schemas.text import DisplayName
from unimatch.schemas.vocabulary import Role


def _trimmed(value: str) -> str:
    return value.strip()


def _digits(value: str) -> str:
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) == limits.OTP_DIGITS):
        raise PydanticCustomError("otp", f"must be {limits.OTP_DIGITS} digits")
    return value


Email = Annotated[
    str, AfterValidator(_trimmed),
    Field(min_length=1, max_length=limits.EMAIL_MAX, json_schema_extra={"format": "email"}),
]
# A password as typed: never trimmed; the policy (length, common passwords)
# is `passwords.password_problems`.
Password = Annotated[str, Field(min_length=1, max_length=limits.PASSWORD_MAX)]
OtpCode = Annotated[
    str, AfterValidator(_digits),
    Field(json_schema_extra={"pattern": f"^[0-9]{{{limits.OTP_DIGITS}}}$"}),
]
Token = Annotated[str, AfterValidator(_trimmed), Field(min_length=1, max_length=limits.TOKEN_MAX)]


class Register(Body):
    email: Email
    password: Password
    display_name: DisplayName


class OtpVerify(Body):
    email: Email
    code: OtpCode


class EmailOnly(Body):
    email: Email


class Login(Body):
    email: Email
    password: Password


class RefreshToken(Body):
    refresh: Token


class PasswordChange(Body):
    current: Password
    new: Password


class PasswordForgot(Body):
    email: Email


class PasswordReset(Body):
    email: Email
    code: OtpCode
    new: Password


# -- responses --------------------------------------------------------------------


class User(OpenOut):
    user_id: uuid.UUID
    email: str
    display_name: str | None = None
    role: Role = "user"
    is_verified: bool
    created_at: dt.datetime | None = None


class Registered(Out):
    user_id: uuid.UUID
    email: str
    is_verified: Literal[False]


class Tokens(Out):
    access: str
    refresh: str


class Session(Out):
    access: str
    refresh: str
    user: User


class Accepted(Out):
    detail: str
