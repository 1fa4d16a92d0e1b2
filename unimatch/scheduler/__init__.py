"""Background work: the durable job queue in PostgreSQL and what runs it.

- `queue`: enqueue inside the caller's transaction, claim with
  `FOR UPDATE SKIP LOCKED` under a lease, complete / fail with backoff.
- `handlers`: the registry of job kinds (`@register(kind)`) and `JobContext`.
- `worker`: `JobRunner`, N asyncio workers woken by LISTEN/NOTIFY.
- `periodic`: the schedule (cleanup, feed refresh, report backup) and its jobs.
- `mail`: `Mailer` (SMTP or a local outbox) and the `send_email` job.
- `actor`: `SchedulerActor`, the Ray actor that runs all of the above.

Guarantee: a job is executed at least once. A worker that dies mid-job leaves
its lease to expire and another worker runs the job again, so every handler
must be idempotent (or tolerate a rare repeat, as mail does).
"""
