-- One-time codes serve two purposes: verifying a new account and resetting a
-- password. Still one live code per user (email_otps_live_key): a new code of
-- either kind ends the other.
ALTER TABLE email_otps
    ADD COLUMN purpose text NOT NULL DEFAULT 'verify' CHECK (purpose IN ('verify', 'reset'));

-- The daily cap on codes counts a user's codes of the last 24 hours.
CREATE INDEX email_otps_user_created_idx ON email_otps (user_id, created_at DESC);

-- The refresh grace: a token used a moment ago names the pair it was
-- rotated into, which can be issued again byte for byte from its jtis and
-- its issue time (no token is stored).
ALTER TABLE refresh_tokens
    ADD COLUMN successor_jti uuid,
    ADD COLUMN access_jti    uuid,
    ADD COLUMN issued_epoch  bigint;
