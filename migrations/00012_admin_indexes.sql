-- Indexes for the admin service's searches (issue 7). Its lists search by
-- substring (ILIKE '%text%': ListMailboxes and CountMailboxes on address and
-- name, ListAliases on address), which a B-tree cannot serve: on a domain of
-- 100,000 mailboxes each search was a sequential scan, twice (the page and
-- its total). pg_trgm's GIN indexes serve substring ILIKE of three or more
-- characters; the admin pool plans each execution for its parameters
-- (store.Options.CustomPlans), so an empty search still pages by the
-- (domain, local_part) index.
--
-- pg_trgm ships with PostgreSQL's contrib (Debian's postgresql-15 package,
-- the official images) and is a trusted extension: the database owner may
-- create it. Where it is missing, or the role may not create it, the
-- migration leaves the indexes out with a warning rather than failing:
-- searches stay correct, only slower.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        RAISE WARNING 'pg_trgm is not available (install PostgreSQL''s contrib): admin searches will scan';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot create extension pg_trgm (%): admin searches will scan', SQLERRM;
        RETURN;
    END;
    CREATE INDEX IF NOT EXISTS mailbox_address_trgm ON mailbox USING gin (address gin_trgm_ops);
    CREATE INDEX IF NOT EXISTS mailbox_name_trgm ON mailbox USING gin (name gin_trgm_ops);
    CREATE INDEX IF NOT EXISTS alias_address_trgm ON alias USING gin (address gin_trgm_ops);
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP INDEX IF EXISTS alias_address_trgm;
DROP INDEX IF EXISTS mailbox_name_trgm;
DROP INDEX IF EXISTS mailbox_address_trgm;
