-- Which envelope senders a local (Unix) user may use when submitting mail
-- with sendmail through the pickup socket: Postfix's local_login_sender_maps.
--
-- Without a row, a local user may use only its own address, user@myorigin
-- (and the null sender, which claims no address); root and the mail owner
-- may use any sender. A row grants one more address (sender = 'x@d') or every
-- address of a domain (sender = '@d'). So a web server's user (www-data)
-- cannot claim any hosted domain unless an operator grants it, say:
--
--   INSERT INTO local_sender (unix_user, sender, description)
--   VALUES ('www-data', 'noreply@shop.example', 'the shop''s order mails');
--
-- Unix user names are case-sensitive and kept as given; senders are stored in
-- canonical form (lower case, IDNA A-labels), as lookups/address makes them.

-- +goose Up

CREATE TABLE local_sender (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    unix_user   text NOT NULL CHECK (unix_user ~ '^[^[:space:][:cntrl:]:/@]{1,64}$'),
    sender      text NOT NULL CHECK (
        sender = lower(sender) AND strpos(sender, '@') > 0 AND sender !~ '[[:space:][:cntrl:]]'
        AND octet_length(sender) <= 254),
    -- the sender's domain, for audit_log's domain column and for views
    domain      text GENERATED ALWAYS AS (substr(sender, length(sender) - strpos(reverse(sender), '@') + 2)) STORED,
    description text NOT NULL DEFAULT '',
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (unix_user, sender),
    CONSTRAINT local_sender_domain_valid CHECK (facteur_valid_domain(domain))
);
CREATE INDEX local_sender_domain ON local_sender (domain);

-- Senders written by hand are folded to lower case and lose a trailing dot.
-- +goose StatementBegin
CREATE FUNCTION facteur_local_sender_normalise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.sender := rtrim(lower(btrim(NEW.sender)), '.');
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER local_sender_normalise BEFORE INSERT OR UPDATE ON local_sender
    FOR EACH ROW EXECUTE FUNCTION facteur_local_sender_normalise();
CREATE TRIGGER local_sender_touch BEFORE UPDATE ON local_sender
    FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER local_sender_changed AFTER INSERT OR UPDATE OR DELETE ON local_sender
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('unix_user', 'domain');

-- +goose Down
DROP TABLE local_sender;
DROP FUNCTION facteur_local_sender_normalise;
