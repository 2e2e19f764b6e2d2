-- Client credentials for relay hosts (Postfix smtp_sasl_password_maps): the
-- SMTP delivery agent authenticates with them when it delivers to a next hop
-- such as "smtp:[smtp.provider.example]:587".
--
-- The key is the next hop as written in the transport, after "smtp:" or
-- "relay:": "[host]:port", "[host]", "host:port" or "host", in lower case.
-- The agent looks up the next hop exactly as the transport names it.

-- +goose Up

CREATE TABLE relay_credential (
    nexthop    text PRIMARY KEY CHECK (
        nexthop = lower(nexthop)
        AND nexthop ~ '^(\[[0-9a-z.:_-]+\]|[0-9a-z._-]+)(:[0-9]{1,5})?$'),
    username   text NOT NULL CHECK (username <> '' AND username !~ '[[:cntrl:]]'),
    -- SECRET. Stored as given, in clear text: the MTA must send it to the
    -- relay host (SASL PLAIN or LOGIN), so it cannot be hashed as mailbox
    -- passwords are. Whoever can read this table or its backups can relay
    -- through the provider's account: grant SELECT on it only to facteur's
    -- role. facteur_changed() leaves the "password" column out of audit_log.
    password   text NOT NULL CHECK (password <> '' AND password !~ '[\r\n]'),
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Next hops written by hand are folded to lower case and lose a trailing dot
-- on the host name, so that "[SMTP.Example.]:587" is found as
-- "[smtp.example]:587".
-- +goose StatementBegin
CREATE FUNCTION facteur_relay_credential_normalise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.nexthop := regexp_replace(lower(btrim(NEW.nexthop)), '\.(\]|:|$)', '\1');
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER relay_credential_normalise BEFORE INSERT OR UPDATE ON relay_credential
    FOR EACH ROW EXECUTE FUNCTION facteur_relay_credential_normalise();
CREATE TRIGGER relay_credential_touch BEFORE UPDATE ON relay_credential
    FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER relay_credential_changed AFTER INSERT OR UPDATE OR DELETE ON relay_credential
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('nexthop');

-- +goose Down
DROP TABLE relay_credential;
DROP FUNCTION facteur_relay_credential_normalise;
