-- Notification pages list a user's rows newest first, read or not; the
-- (user_id, is_read, created_at) index of 001 serves the unread variant.
CREATE INDEX notifications_user_created_idx
    ON notifications (user_id, created_at DESC, id DESC);

-- The moderation queue walks open reports oldest first.
CREATE INDEX reports_open_created_idx ON reports (created_at, id) WHERE status = 'open';

-- Pending webhook deliveries of a webhook, for operators and cleanup.
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id)
    WHERE status = 'pending';
