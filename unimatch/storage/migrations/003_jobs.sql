-- The job queue's housekeeping indexes (the table itself is in 001).

-- Periodic jobs are enqueued at most once per period: the check looks for the
-- key in every status, not only the queued/running ones of jobs_dedupe_key.
CREATE INDEX jobs_dedupe_any_idx ON jobs (dedupe_key) WHERE dedupe_key IS NOT NULL;

-- The daily purge of finished jobs walks them by age.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE status IN ('done', 'dead');
