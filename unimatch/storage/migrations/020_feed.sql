-- The discover feed: what its one query needs to score 100,000 users in a
-- few milliseconds without a join per candidate.
--
-- Each interest gets a bit (0..62), and every user carries, maintained by
-- triggers from the normalised tables (which stay the truth):
--   interest_mask  the bits of their interests: shared interests are
--                  bit_count(a & b), one AND per candidate instead of a join;
--   seeking_mask   the genders in user_interested_in (woman 1, man 2, nonbinary 4);
--   has_photo      at least one row in photos.
-- The columns are rebuilt per statement (transition tables), so a COPY of
-- a million interest rows costs one UPDATE, not a million.

ALTER TABLE interests ADD COLUMN bit smallint;
UPDATE interests SET bit = ordered.n - 1
FROM (SELECT id, row_number() OVER (ORDER BY slug) AS n FROM interests) AS ordered
WHERE interests.id = ordered.id;
CREATE SEQUENCE interests_bit_seq MINVALUE 0 MAXVALUE 62 OWNED BY interests.bit;
SELECT setval('interests_bit_seq', (SELECT max(bit) FROM interests));
ALTER TABLE interests
    ALTER COLUMN bit SET DEFAULT nextval('interests_bit_seq'),
    ALTER COLUMN bit SET NOT NULL,
    ADD CONSTRAINT interests_bit_range CHECK (bit BETWEEN 0 AND 62),
    ADD CONSTRAINT interests_bit_key UNIQUE (bit);

ALTER TABLE users
    ADD COLUMN interest_mask bigint NOT NULL DEFAULT 0,
    ADD COLUMN seeking_mask smallint NOT NULL DEFAULT 0,
    ADD COLUMN has_photo boolean NOT NULL DEFAULT false;

CREATE FUNCTION gender_bit(gender text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE gender WHEN 'woman' THEN 1 WHEN 'man' THEN 2 WHEN 'nonbinary' THEN 4 ELSE 0 END)::smallint
$$;

CREATE FUNCTION feed_refresh_users(ids uuid[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE users u SET
        interest_mask = coalesce((
            SELECT bit_or(1::bigint << i.bit)
            FROM user_interests ui JOIN interests i ON i.id = ui.interest_id
            WHERE ui.user_id = u.id), 0),
        seeking_mask = coalesce((
            SELECT bit_or(gender_bit(g.gender)) FROM user_interested_in g
            WHERE g.user_id = u.id), 0)::smallint,
        has_photo = EXISTS (SELECT 1 FROM photos p WHERE p.user_id = u.id)
    WHERE u.id = ANY(ids)
$$;

CREATE FUNCTION feed_refresh_from_new() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM feed_refresh_users(ARRAY(SELECT DISTINCT user_id FROM changed));
    RETURN NULL;
END
$$;

CREATE TRIGGER user_interests_feed_ins AFTER INSERT ON user_interests
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_refresh_from_new();
CREATE TRIGGER user_interests_feed_del AFTER DELETE ON user_interests
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_refresh_from_new();
CREATE TRIGGER user_interested_in_feed_ins AFTER INSERT ON user_interested_in
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_refresh_from_new();
CREATE TRIGGER user_interested_in_feed_del AFTER DELETE ON user_interested_in
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_refresh_from_new();
CREATE TRIGGER photos_feed_ins AFTER INSERT ON photos
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_refresh_from_new();
CREATE TRIGGER photos_feed_del AFTER DELETE ON photos
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION feed_refresh_from_new();

-- Rows that already exist (a database migrated before this file).
SELECT feed_refresh_users(ARRAY(SELECT id FROM users));

-- Profile completeness from the row alone, for the +10 of the score. It is
-- storage.users.PROFILE_COMPLETE over the denormalised columns (a test
-- checks that the two agree).
ALTER TABLE users ADD COLUMN feed_complete boolean GENERATED ALWAYS AS (
    bio IS NOT NULL AND birthdate IS NOT NULL AND gender IS NOT NULL
    AND campus_id IS NOT NULL AND year_of_study IS NOT NULL
    AND seeking_mask <> 0 AND bit_count(interest_mask::bit(64)) >= 3 AND has_photo) STORED;

-- The feed scores the viewer's whole campus and the most recently active
-- eligible users of the other campuses, walked newest first. Both indexes
-- carry every column the filters and the score read, so both walks are
-- index-only scans (no heap page per candidate).
CREATE INDEX users_feed_campus_idx ON users (campus_id, last_active DESC)
    INCLUDE (id, gender, seeking_mask, year_of_study, interest_mask, feed_complete)
    WHERE is_verified AND is_visible;
CREATE INDEX users_feed_active_idx ON users (last_active DESC)
    INCLUDE (id, campus_id, gender, seeking_mask, year_of_study, interest_mask, feed_complete)
    WHERE is_verified AND is_visible;

-- GET /matches: a user's unread messages per match, without walking the
-- whole history.
CREATE INDEX messages_unread_idx ON messages (match_id, sender_id) WHERE read_at IS NULL;
