"""Job kinds only tests enqueue, imported by scheduler actors started in tests.

`test_actor_mail` is `send_email` under a kind no other runner of the run
claims, so a test knows which scheduler delivered the mail."""

from __future__ import annotations

from unimatch.scheduler.handlers import register
from unimatch.scheduler.mail import send_email

TEST_ACTOR_MAIL = "test_actor_mail"

register(TEST_ACTOR_MAIL)(send_email)
