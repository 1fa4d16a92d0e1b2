"""A real SMTP server (aiosmtpd) for tests, and the inbox it fills."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

TIMEOUT = 60.0


class Inbox:
    """An aiosmtpd handler that hands each message to the test's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.messages: list[EmailMessage] = []
        self._changed = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        # aiosmtpd runs its own loop in a thread of its own.
        self.loop.call_soon_threadsafe(self._add, message)
        return "250 Message accepted for delivery"

    def _add(self, message: Any) -> None:
        self.messages.append(message)
        self._changed.set()

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    async def wait_for(
        self, address: str, within: float = TIMEOUT, count: int = 1
    ) -> EmailMessage:
        """The `count`-th mail to `address`, once it has arrived."""
        async with asyncio.timeout(within):
            while len(self.to(address)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.to(address)[count - 1]


class SmtpServer:
    def __init__(self, inbox: Inbox, port: int) -> None:
        self.inbox = inbox
        self.port = port
        self.controller: Controller | None = None

    async def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        await asyncio.to_thread(self.controller.start)

    async def stop(self) -> None:
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop)
            self.controller = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
