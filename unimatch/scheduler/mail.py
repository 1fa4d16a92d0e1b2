"""Outgoing mail: `Mailer` and the `send_email` job.

Mail is sent from a job, never from a request: the caller enqueues
`send_email` in the transaction that creates what the mail is about (an OTP
code), and the scheduler delivers it with retries while SMTP is down.

Delivery is at-least-once: if the worker dies between the SMTP server's
acceptance and the job's completion, the mail is sent again. Both copies carry
the same Message-ID (derived from the job id), so mail clients can fold them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import Any

import aiosmtplib

from unimatch.domain.config import Config
from unimatch.scheduler.handlers import JobContext, PermanentJobError, register
from unimatch.storage.jobs import SEND_EMAIL

log = logging.getLogger("unimatch.mail")


_TLS_MODES = {"false", "starttls", "tls"}


class Mailer:
    """Sends mail through `config.smtp_host`; with no host configured, writes
    each mail to the log and to `data_dir/outbox/<timestamp>-<uuid>.eml` (so a
    developer can read the OTP code). SMTP errors propagate: the job retries."""

    def __init__(self, config: Config, *, timeout: float = 30.0) -> None:
        if config.smtp_tls not in _TLS_MODES:
            raise ValueError(f"smtp_tls must be one of {sorted(_TLS_MODES)}")
        self.config = config
        self.timeout = timeout
        self.outbox = config.data_dir / "outbox"

    @property
    def uses_smtp(self) -> bool:
        return bool(self.config.smtp_host)

    def build(
        self, to: str, subject: str, text: str, *, message_id: str | None = None
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.config.mail_from
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = message_id or self.message_id(uuid.uuid4().hex)
        message.set_content(text)
        return message

    def message_id(self, unique: str) -> str:
        _, address = parseaddr(self.config.mail_from)
        domain = address.rpartition("@")[2] or "unimatch.local"
        return f"<{unique}@{domain}>"

    async def send(
        self, to: str, subject: str, text: str, *, message_id: str | None = None
    ) -> None:
        message = self.build(to, subject, text, message_id=message_id)
        if self.uses_smtp:
            await self._send_smtp(message)
        else:
            path = await asyncio.to_thread(self._write_outbox, message)
            log.info("mail to %s (outbox %s)\nSubject: %s\n\n%s", to, path, subject, text)

    async def _send_smtp(self, message: EmailMessage) -> None:
        mode = self.config.smtp_tls
        await aiosmtplib.send(
            message,
            hostname=self.config.smtp_host,
            port=self.config.smtp_port,
            username=self.config.smtp_user,
            password=self.config.smtp_password,
            use_tls=mode == "tls",
            # False, not None: None would upgrade opportunistically, and a
            # deployment that asked for no TLS should get none.
            start_tls=mode == "starttls",
            timeout=self.timeout,
        )

    def _write_outbox(self, message: EmailMessage) -> Path:
        self.outbox.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.outbox / f"{stamp}-{uuid.uuid4()}.eml"
        # Written aside and renamed, so a reader never sees half a mail.
        partial = path.with_suffix(".eml.partial")
        partial.write_bytes(message.as_bytes())
        partial.replace(path)
        return path


@register(SEND_EMAIL)
async def send_email(payload: dict[str, Any], ctx: JobContext) -> None:
    """Payload `{to, subject, text}`. Needs a `Mailer` service."""
    try:
        to, subject, text = payload["to"], payload["subject"], payload["text"]
    except KeyError as exc:
        raise PermanentJobError(f"send_email payload lacks {exc}") from None
    mailer = ctx.service(Mailer)
    await mailer.send(to, subject, text, message_id=mailer.message_id(f"job-{ctx.job.id}"))
