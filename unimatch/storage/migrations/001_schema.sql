-- The whole schema of the contract: accounts, profiles, discover and match,
-- chat, notifications, webhooks, moderation and the durable job queue.
-- gen_random_uuid() is built into PostgreSQL 13+, so no extension is needed.


CREATE TABLE campuses (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL UNIQUE,
    city        text NOT NULL,
    email_domain text
);

CREATE TABLE interests (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL UNIQUE,
    category    text NOT NULL
);

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'moderator')),
    is_verified   boolean NOT NULL DEFAULT false,
    is_visible    boolean NOT NULL DEFAULT true,
    display_name  text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 50),
    bio           text CHECK (char_length(bio) <= 500),
    birthdate     date,
    gender        text CHECK (gender IN ('woman', 'man', 'nonbinary')),
    campus_id     uuid REFERENCES campuses (id),
    year_of_study smallint CHECK (year_of_study BETWEEN 1 AND 7),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    verified_at   timestamptz,
    last_active   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_campus_active_idx ON users (campus_id, last_active DESC)
    WHERE is_verified AND is_visible;
CREATE INDEX users_unverified_created_idx ON users (created_at) WHERE NOT is_verified;

-- Whom a user wants to see: a set of genders, one row each.
CREATE TABLE user_interested_in (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    gender  text NOT NULL CHECK (gender IN ('woman', 'man', 'nonbinary')),
    PRIMARY KEY (user_id, gender)
);
CREATE INDEX user_interested_in_gender_idx ON user_interested_in (gender, user_id);

CREATE TABLE user_interests (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    interest_id uuid NOT NULL REFERENCES interests (id),
    PRIMARY KEY (user_id, interest_id)
);
CREATE INDEX user_interests_interest_idx ON user_interests (interest_id, user_id);

CREATE TABLE photos (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename     text NOT NULL UNIQUE,
    content_type text NOT NULL,
    width        integer NOT NULL,
    height       integer NOT NULL,
    size_bytes   integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX photos_user_idx ON photos (user_id, created_at);

CREATE TABLE email_otps (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash      text NOT NULL,
    attempts       smallint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    consumed_at    timestamptz,
    invalidated_at timestamptz
);
-- At most one live code per user: a new one invalidates the old.
CREATE UNIQUE INDEX email_otps_live_key ON email_otps (user_id)
    WHERE consumed_at IS NULL AND invalidated_at IS NULL;

CREATE TABLE refresh_token_families (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX refresh_token_families_user_idx ON refresh_token_families (user_id)
    WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    jti        uuid PRIMARY KEY,
    family_id  uuid NOT NULL REFERENCES refresh_token_families (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE TABLE swipes (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    swiper_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    swiped_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    action     text NOT NULL CHECK (action IN ('like', 'pass')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (swiper_id <> swiped_id),
    UNIQUE (swiper_id, swiped_id)
);
CREATE INDEX swipes_swiped_idx ON swipes (swiped_id, swiper_id);
CREATE INDEX swipes_likes_today_idx ON swipes (swiper_id, created_at) WHERE action = 'like';

-- One row per unordered pair (user_a < user_b). The id is derived from the
-- pair, so the pair's virtual actor and the match share one key.
CREATE TABLE matches (
    id         uuid PRIMARY KEY,
    user_a     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_b     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    ended_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    end_reason text CHECK (end_reason IN ('unmatch', 'block', 'suspend', 'ban')),
    CHECK (user_a < user_b),
    UNIQUE (user_a, user_b)
);
CREATE INDEX matches_user_a_idx ON matches (user_a) WHERE ended_at IS NULL;
CREATE INDEX matches_user_b_idx ON matches (user_b) WHERE ended_at IS NULL;

CREATE TABLE messages (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    match_id      uuid NOT NULL REFERENCES matches (id) ON DELETE CASCADE,
    seq           bigint NOT NULL CHECK (seq >= 1),
    sender_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body          text NOT NULL CHECK (char_length(body) BETWEEN 1 AND 2000),
    client_msg_id text NOT NULL CHECK (char_length(client_msg_id) BETWEEN 1 AND 100),
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    read_at       timestamptz,
    UNIQUE (match_id, seq),
    UNIQUE (match_id, sender_id, client_msg_id)
);
CREATE INDEX messages_match_created_idx ON messages (match_id, created_at DESC);

CREATE TABLE notifications (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_read    boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_idx ON notifications (user_id, is_read, created_at DESC);

CREATE TABLE webhooks (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url        text NOT NULL,
    secret     text NOT NULL,
    is_active  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_user_idx ON webhooks (user_id) WHERE is_active;

CREATE TABLE webhook_events (
    webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event      text NOT NULL,
    PRIMARY KEY (webhook_id, event)
);

CREATE TABLE webhook_deliveries (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id    uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event         text NOT NULL,
    payload       jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    response_code integer,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC);

CREATE TABLE reports (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    reporter_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reported_user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason           text NOT NULL CHECK (reason IN
        ('spam', 'harassment', 'fake_profile', 'inappropriate_content', 'underage', 'other')),
    details          text NOT NULL DEFAULT '' CHECK (char_length(details) <= 2000),
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolution       text CHECK (resolution IN ('dismiss', 'warn', 'suspend', 'ban')),
    resolved_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    resolved_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (reporter_id <> reported_user_id)
);
CREATE INDEX reports_reported_status_idx ON reports (reported_user_id, status);
CREATE INDEX reports_status_created_idx ON reports (status, created_at);

-- Suspensions are the truth of who is suspended: a row with no lifted_at
-- whose `until` is null (a ban) or still ahead.
CREATE TABLE suspensions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason     text NOT NULL,
    until      timestamptz,
    report_id  uuid REFERENCES reports (id) ON DELETE SET NULL,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    lifted_at  timestamptz,
    lifted_by  uuid REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX suspensions_active_idx ON suspensions (user_id) WHERE lifted_at IS NULL;

CREATE TABLE blocks (
    blocker_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
CREATE INDEX blocks_blocked_idx ON blocks (blocked_id, blocker_id);

-- The durable job queue: claimed with FOR UPDATE SKIP LOCKED, leased, retried
-- with backoff, dead after max_attempts. Lower priority runs first.
CREATE TABLE jobs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind         text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
    priority     smallint NOT NULL DEFAULT 100,
    status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 8,
    run_at       timestamptz NOT NULL DEFAULT now(),
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    dedupe_key   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX jobs_ready_idx ON jobs (priority, run_at) WHERE status = 'queued';
CREATE INDEX jobs_lease_idx ON jobs (locked_until) WHERE status = 'running';
CREATE UNIQUE INDEX jobs_dedupe_key ON jobs (dedupe_key) WHERE status IN ('queued', 'running');
