-- Mail authentication and abuse defence (issue 8): DKIM signing keys, DNSBL
-- and DNSWL sites, per-domain and per-mailbox policy (greylisting, DMARC
-- failures, outbound limits), and the runtime state of greylisting and of
-- the outbound counters.
--
-- dkim_key, dnsbl, domain_policy and mailbox_policy are control-plane tables:
-- normalised by BEFORE triggers, touched, audited and announced with NOTIFY
-- facteur_config (facteur_changed leaves private_key out of audit_log).
-- greylist, greylist_client and send_counter are runtime state written on
-- the mail path: neither audited nor announced, and their times come from
-- the caller's clock (tests inject one), never from now().

-- +goose Up

-- DKIM signing keys (RFC 6376). A domain signs with its newest active key;
-- rotation is adding a key under a new selector (publish its DNS record
-- first, then activate it), then deactivating and finally removing the old
-- one once mail signed with it is no longer in flight.
CREATE TABLE dkim_key (
    domain      text NOT NULL REFERENCES domain (name) ON DELETE CASCADE ON UPDATE CASCADE,
    -- RFC 6376 3.1: a selector is one or more DNS labels
    selector    text NOT NULL CHECK (facteur_valid_domain(selector) AND length(selector) <= 63),
    algorithm   text NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    -- SECRET: the PKCS#8 (or PKCS#1 for RSA) PEM private key. Whoever can read
    -- this table can sign mail as the domain: grant SELECT on it only to
    -- facteur's role. Never written to audit_log.
    private_key text NOT NULL CHECK (private_key LIKE '-----BEGIN %PRIVATE KEY-----%'),
    -- the p= value of the DNS record: base64 of the SubjectPublicKeyInfo
    -- (rsa) or of the 32-byte public key (ed25519, RFC 8463)
    public_key  text NOT NULL CHECK (public_key ~ '^[A-Za-z0-9+/]+={0,2}$'),
    -- where and what to publish
    dns_name    text GENERATED ALWAYS AS (selector || '._domainkey.' || domain) STORED,
    dns_record  text GENERATED ALWAYS AS (
        'v=DKIM1; k=' || CASE algorithm WHEN 'ed25519-sha256' THEN 'ed25519' ELSE 'rsa' END
        || '; p=' || public_key) STORED,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, selector)
);
CREATE INDEX dkim_key_active ON dkim_key (domain, created_at DESC) WHERE active;

-- DNS block and allow lists for the client IP, postscreen-style
-- (postscreen_dnsbl_sites): each listing adds its weight to the client's
-- score; allow lists (DNSWL) have negative weights. reply_filter keeps only
-- some answers, one pattern per octet: a number, "*", or a bracketed list
-- of numbers and ranges, as in "127.0.0.[2..11]" or "127.0.[0..255].[1;3]".
-- A zone may appear several times with different filters and weights.
CREATE TABLE dnsbl (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    zone         text NOT NULL CHECK (facteur_valid_domain(zone)),
    reply_filter text NOT NULL DEFAULT '' CHECK (reply_filter = '' OR reply_filter ~
        '^(\*|[0-9]{1,3}|\[[0-9]{1,3}(\.\.[0-9]{1,3})?(;[0-9]{1,3}(\.\.[0-9]{1,3})?)*\])(\.(\*|[0-9]{1,3}|\[[0-9]{1,3}(\.\.[0-9]{1,3})?(;[0-9]{1,3}(\.\.[0-9]{1,3})?)*\])){3}$'),
    weight       integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN -1000 AND 1000 AND weight <> 0),
    -- the name shown in the 554 reply instead of zone ('' shows the zone):
    -- for zones whose name carries an access key
    reply_name   text NOT NULL DEFAULT '' CHECK (reply_name !~ '[[:cntrl:]]' AND length(reply_name) <= 253),
    description  text NOT NULL DEFAULT '',
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (zone, reply_filter)
);

-- Policy of a domain (absent row or inactive: the defaults).
CREATE TABLE domain_policy (
    domain                     text PRIMARY KEY REFERENCES domain (name) ON DELETE CASCADE ON UPDATE CASCADE,
    -- greylist mail for this domain's recipients
    greylisting                boolean NOT NULL DEFAULT false,
    -- what a DMARC failure of mail for this domain leads to: honour the
    -- sender's p= (reject: 550 5.7.1), quarantine instead of rejecting, or
    -- only record it in Authentication-Results
    dmarc_failure              text NOT NULL DEFAULT 'honour'
                               CHECK (dmarc_failure IN ('honour', 'quarantine', 'record')),
    -- outbound limits on the domain's submitted mail, all mailboxes
    -- together (NULL: unlimited)
    max_messages_per_hour      integer CHECK (max_messages_per_hour > 0),
    max_messages_per_day       integer CHECK (max_messages_per_day > 0),
    max_recipients_per_message integer CHECK (max_recipients_per_message > 0),
    active                     boolean NOT NULL DEFAULT true,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- Outbound limits of one mailbox (NULL: unlimited); the domain's apply too.
CREATE TABLE mailbox_policy (
    mailbox                    text PRIMARY KEY REFERENCES mailbox (address) ON DELETE CASCADE ON UPDATE CASCADE,
    domain                     text GENERATED ALWAYS AS (split_part(mailbox, '@', 2)) STORED,
    max_messages_per_hour      integer CHECK (max_messages_per_hour > 0),
    max_messages_per_day       integer CHECK (max_messages_per_day > 0),
    max_recipients_per_message integer CHECK (max_recipients_per_message > 0),
    active                     boolean NOT NULL DEFAULT true,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- Names written by hand are folded to lower case and lose a trailing dot.
-- +goose StatementBegin
CREATE FUNCTION facteur_msgauth_normalise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    CASE TG_TABLE_NAME
    WHEN 'dkim_key' THEN
        NEW.domain := rtrim(lower(btrim(NEW.domain)), '.');
        NEW.selector := rtrim(lower(btrim(NEW.selector)), '.');
    WHEN 'dnsbl' THEN
        NEW.zone := rtrim(lower(btrim(NEW.zone)), '.');
        NEW.reply_filter := btrim(NEW.reply_filter);
    WHEN 'domain_policy' THEN
        NEW.domain := rtrim(lower(btrim(NEW.domain)), '.');
    WHEN 'mailbox_policy' THEN
        NEW.mailbox := rtrim(lower(btrim(NEW.mailbox)), '.');
    END CASE;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER dkim_key_normalise BEFORE INSERT OR UPDATE ON dkim_key
    FOR EACH ROW EXECUTE FUNCTION facteur_msgauth_normalise();
CREATE TRIGGER dnsbl_normalise BEFORE INSERT OR UPDATE ON dnsbl
    FOR EACH ROW EXECUTE FUNCTION facteur_msgauth_normalise();
CREATE TRIGGER domain_policy_normalise BEFORE INSERT OR UPDATE ON domain_policy
    FOR EACH ROW EXECUTE FUNCTION facteur_msgauth_normalise();
CREATE TRIGGER mailbox_policy_normalise BEFORE INSERT OR UPDATE ON mailbox_policy
    FOR EACH ROW EXECUTE FUNCTION facteur_msgauth_normalise();

CREATE TRIGGER dkim_key_touch BEFORE UPDATE ON dkim_key FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER dnsbl_touch BEFORE UPDATE ON dnsbl FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER domain_policy_touch BEFORE UPDATE ON domain_policy FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER mailbox_policy_touch BEFORE UPDATE ON mailbox_policy FOR EACH ROW EXECUTE FUNCTION facteur_touch();

CREATE TRIGGER dkim_key_changed AFTER INSERT OR UPDATE OR DELETE ON dkim_key
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('dns_name', 'domain');
CREATE TRIGGER dnsbl_changed AFTER INSERT OR UPDATE OR DELETE ON dnsbl
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('zone');
CREATE TRIGGER domain_policy_changed AFTER INSERT OR UPDATE OR DELETE ON domain_policy
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('domain', 'domain');
CREATE TRIGGER mailbox_policy_changed AFTER INSERT OR UPDATE OR DELETE ON mailbox_policy
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('mailbox', 'domain');

-- Greylisting state (runtime). A triplet is the client's network (/24 for
-- IPv4, /64 for IPv6 by default), the envelope sender ('' for <>) and the
-- recipient, in lower case.
CREATE TABLE greylist (
    client     cidr NOT NULL,
    sender     text NOT NULL,
    recipient  text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    -- when a retry first came after the delay; NULL while greylisted
    passed_at  timestamptz,
    -- attempts seen
    count      integer NOT NULL DEFAULT 1 CHECK (count > 0),
    PRIMARY KEY (client, sender, recipient),
    CHECK (last_seen >= first_seen)
);
CREATE INDEX greylist_last_seen ON greylist (last_seen);

-- Clients that retried properly: after enough passed triplets a client's
-- network is no longer greylisted (postgrey's auto-whitelisting).
CREATE TABLE greylist_client (
    client     cidr PRIMARY KEY,
    passes     integer NOT NULL DEFAULT 0 CHECK (passes >= 0),
    first_pass timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);
CREATE INDEX greylist_client_last_seen ON greylist_client (last_seen);

-- Outbound counters (runtime): messages and recipients submitted per mailbox
-- and per domain, in 5-minute buckets, written after a message is queued and
-- summed over the last hour and day at MAIL FROM. Every node writes the same
-- rows, so the limits hold across nodes.
CREATE TABLE send_counter (
    scope      text NOT NULL CHECK (scope IN ('mailbox', 'domain')),
    subject    text NOT NULL,
    bucket     timestamptz NOT NULL,
    messages   integer NOT NULL DEFAULT 0 CHECK (messages >= 0),
    recipients integer NOT NULL DEFAULT 0 CHECK (recipients >= 0),
    PRIMARY KEY (scope, subject, bucket)
);
CREATE INDEX send_counter_bucket ON send_counter (bucket);

-- +goose Down
DROP TABLE send_counter, greylist_client, greylist, mailbox_policy, domain_policy, dnsbl, dkim_key;
DROP FUNCTION facteur_msgauth_normalise;
