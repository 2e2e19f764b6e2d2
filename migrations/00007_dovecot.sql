-- Dovecot shares the database (docs/dovecot).
--
-- Dovecot's quota_clone writes usage into quota_usage through dict-sql with
-- INSERT … ON CONFLICT (username) DO UPDATE SET bytes = …, messages = …,
-- which names only those columns: keep updated_at true with the same touch
-- trigger as the control-plane tables. (quota_usage is not audited and sends
-- no NOTIFY: it changes with every delivery and expunge.)

-- +goose Up
CREATE TRIGGER quota_usage_touch BEFORE UPDATE ON quota_usage
    FOR EACH ROW EXECUTE FUNCTION facteur_touch();

-- +goose Down
DROP TRIGGER quota_usage_touch ON quota_usage;
