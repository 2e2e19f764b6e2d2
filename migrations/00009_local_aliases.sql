-- Aliases imported by `facteur newaliases` from an aliases(5) file carry the
-- file's absolute path in alias.source, so that importing the file again
-- replaces exactly the aliases that came from it (for that domain) and
-- leaves every other alias alone. Aliases written by the CLI, the admin API
-- or by hand have no source (NULL).
--
-- Commands, files and :include: destinations are still allowed only on
-- domains marked local (facteur_address_normalise); newaliases imports them
-- only from a file owned by root and not writable by others.

-- +goose Up
ALTER TABLE alias ADD COLUMN source text
    CHECK (source IS NULL OR (source ~ '^/' AND source !~ '[[:cntrl:]]' AND octet_length(source) <= 4096));
CREATE INDEX alias_source ON alias (source, domain) WHERE source IS NOT NULL;

-- +goose Down
DROP INDEX alias_source;
ALTER TABLE alias DROP COLUMN source;
