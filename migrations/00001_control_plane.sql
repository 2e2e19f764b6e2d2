-- facteur control plane: domains, mailboxes, aliases, transports, admins, audit.
--
-- The database guards its own invariants because operators write SQL directly:
-- names are normalised (lower case) by BEFORE triggers and checked by CHECK
-- constraints, domain limits are enforced by triggers that lock the domain row,
-- every write is audited and announced with NOTIFY facteur_config.
--
-- Custom SQLSTATEs raised by triggers (mapped to sentinel errors by store/):
--   FL001  a domain limit would be exceeded      (store.ErrLimitExceeded)
--   FV001  a write violates a facteur invariant  (store.ErrInvalid)

-- +goose Up

-- Process-independent settings that every node shares (the default target of
-- postmaster@/abuse@ for new domains, the recipient delimiter, ...).
CREATE TABLE setting (
    key        text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]*$'),
    value      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A domain name in canonical form: lower-case ASCII (IDNA A-labels), no
-- trailing dot, labels of letters, digits and hyphens.
-- +goose StatementBegin
CREATE FUNCTION facteur_valid_domain(d text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT d IS NOT NULL
       AND length(d) BETWEEN 1 AND 253
       AND d ~ '^([a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'
$$;
-- +goose StatementEnd

-- A local part in canonical form: lower case, no '@', no whitespace or control
-- characters, at most 64 octets (RFC 5321 4.5.3.1.1).
-- +goose StatementBegin
CREATE FUNCTION facteur_valid_local(l text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT l IS NOT NULL
       AND octet_length(l) BETWEEN 1 AND 64
       AND l = lower(l)
       AND l !~ '[@[:space:][:cntrl:]]'
$$;
-- +goose StatementEnd

-- Split an address at its last '@' into (local, domain), lower-casing both.
-- +goose StatementBegin
CREATE FUNCTION facteur_split_address(addr text, OUT local_part text, OUT domain text)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    at int;
BEGIN
    at := length(addr) - strpos(reverse(addr), '@') + 1;
    IF strpos(addr, '@') = 0 THEN
        RAISE EXCEPTION 'address "%" has no domain', addr USING ERRCODE = 'FV001';
    END IF;
    local_part := lower(substr(addr, 1, at - 1));
    domain := rtrim(lower(substr(addr, at + 1)), '.');
END
$$;
-- +goose StatementEnd

-- updated_at on every UPDATE.
-- +goose StatementBegin
CREATE FUNCTION facteur_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- The audit log, range-partitioned by day (facteur prune drops old partitions).
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    operation  text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    table_name text NOT NULL,
    row_key    text NOT NULL,
    domain     text,
    old        jsonb,
    new        jsonb,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_domain_at ON audit_log (domain, at);

-- Audit and announce a control-plane write. TG_ARGV[0] names the key column,
-- TG_ARGV[1] (optional) the column holding the row's domain. Secrets are
-- redacted from the audit copy. The actor comes from SET LOCAL facteur.actor
-- (the store sets it), else the database session user: raw SQL is audited too.
-- +goose StatementBegin
CREATE FUNCTION facteur_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    k text;
    d text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := to_jsonb(OLD) - 'password' - 'token_hash' - 'totp_secret' - 'private_key';
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := to_jsonb(NEW) - 'password' - 'token_hash' - 'totp_secret' - 'private_key';
    END IF;
    k := coalesce(n, o) ->> TG_ARGV[0];
    IF TG_NARGS > 1 THEN
        d := coalesce(n, o) ->> TG_ARGV[1];
    END IF;
    INSERT INTO audit_log (actor, operation, table_name, row_key, domain, old, new)
    VALUES (coalesce(nullif(current_setting('facteur.actor', true), ''), session_user::text),
            TG_OP, TG_TABLE_NAME, coalesce(k, ''), d, o, n);
    PERFORM pg_notify('facteur_config', TG_TABLE_NAME || ':' || coalesce(k, ''));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- Domains ------------------------------------------------------------------

CREATE TABLE domain (
    name                text PRIMARY KEY CHECK (facteur_valid_domain(name)),
    description         text NOT NULL DEFAULT '',
    active              boolean NOT NULL DEFAULT true,
    -- backup MX / relay domain: mail is accepted and relayed to transport (or MX)
    backup_mx           boolean NOT NULL DEFAULT false,
    -- a "local" domain (the host's own name): system users, /etc/aliases,
    -- command and file destinations
    local               boolean NOT NULL DEFAULT false,
    transport           text,
    max_mailboxes       integer CHECK (max_mailboxes >= 0),
    max_aliases         integer CHECK (max_aliases >= 0),
    max_quota_bytes     bigint CHECK (max_quota_bytes > 0),
    total_quota_bytes   bigint CHECK (total_quota_bytes > 0),
    default_quota_bytes bigint CHECK (default_quota_bytes > 0),
    max_message_bytes   bigint CHECK (max_message_bytes > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (default_quota_bytes IS NULL OR max_quota_bytes IS NULL OR default_quota_bytes <= max_quota_bytes)
);

CREATE TABLE alias_domain (
    alias_domain  text PRIMARY KEY CHECK (facteur_valid_domain(alias_domain)),
    target_domain text NOT NULL REFERENCES domain (name) ON DELETE CASCADE ON UPDATE CASCADE,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alias_domain_not_self CHECK (alias_domain <> target_domain)
);
CREATE INDEX alias_domain_target ON alias_domain (target_domain);

-- Normalise a domain name written by hand, and keep the domain and alias
-- domain name spaces apart (an alias domain cannot be a real domain, so it can
-- never be the target of another alias domain).
-- +goose StatementBegin
CREATE FUNCTION facteur_domain_normalise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'domain' THEN
        NEW.name := rtrim(lower(NEW.name), '.');
        IF EXISTS (SELECT 1 FROM alias_domain WHERE alias_domain = NEW.name) THEN
            RAISE EXCEPTION 'domain "%" is already an alias domain', NEW.name USING ERRCODE = 'FV001';
        END IF;
    ELSE
        NEW.alias_domain := rtrim(lower(NEW.alias_domain), '.');
        NEW.target_domain := rtrim(lower(NEW.target_domain), '.');
        IF NEW.alias_domain = NEW.target_domain THEN
            RAISE EXCEPTION 'alias domain "%" cannot point at itself', NEW.alias_domain USING ERRCODE = 'FV001';
        END IF;
        IF EXISTS (SELECT 1 FROM domain WHERE name = NEW.alias_domain) THEN
            RAISE EXCEPTION 'alias domain "%" is already a domain', NEW.alias_domain USING ERRCODE = 'FV001';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER domain_normalise BEFORE INSERT OR UPDATE ON domain
    FOR EACH ROW EXECUTE FUNCTION facteur_domain_normalise();
CREATE TRIGGER alias_domain_normalise BEFORE INSERT OR UPDATE ON alias_domain
    FOR EACH ROW EXECUTE FUNCTION facteur_domain_normalise();

-- Mailboxes ----------------------------------------------------------------

CREATE TABLE mailbox (
    address     text PRIMARY KEY,
    local_part  text NOT NULL CHECK (facteur_valid_local(local_part)),
    domain      text NOT NULL REFERENCES domain (name) ON DELETE CASCADE ON UPDATE CASCADE,
    name        text NOT NULL DEFAULT '',
    -- Dovecot {SCHEME} form, shared with Dovecot's SQL passdb
    password    text NOT NULL DEFAULT '',
    quota_bytes bigint CHECK (quota_bytes > 0),
    -- relative to the mail root; Dovecot's userdb reads the same column
    maildir     text NOT NULL,
    transport   text,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT mailbox_address_parts CHECK (address = local_part || '@' || domain),
    CONSTRAINT mailbox_maildir_relative CHECK (
        maildir <> '' AND maildir !~ '^/' AND maildir !~ '(^|/)\.\.(/|$)' AND maildir !~ '[[:cntrl:]]')
);
CREATE INDEX mailbox_domain ON mailbox (domain, local_part);

-- Aliases: an address (local@domain) or a catch-all (@domain) to one or more
-- destinations. A destination is an address, or on domains marked local only,
-- a bare local user, |command, /file or :include:/path.
CREATE TABLE alias (
    address      text PRIMARY KEY,
    local_part   text NOT NULL CHECK (local_part = '' OR facteur_valid_local(local_part)),
    domain       text NOT NULL REFERENCES domain (name) ON DELETE CASCADE ON UPDATE CASCADE,
    destinations text[] NOT NULL CHECK (cardinality(destinations) BETWEEN 1 AND 10000),
    description  text NOT NULL DEFAULT '',
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alias_address_parts CHECK (address = local_part || '@' || domain)
);
CREATE INDEX alias_domain_idx ON alias (domain, local_part);
CREATE INDEX alias_destinations ON alias USING gin (destinations);

-- Normalise addresses written by hand and enforce the alias and mailbox rules.
-- +goose StatementBegin
CREATE FUNCTION facteur_address_normalise() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parts record;
    dst   text;
    is_local boolean;
    out_dst text[] := '{}';
BEGIN
    parts := facteur_split_address(NEW.address);
    NEW.local_part := parts.local_part;
    NEW.domain := parts.domain;
    NEW.address := parts.local_part || '@' || parts.domain;

    IF TG_TABLE_NAME = 'mailbox' THEN
        IF NEW.maildir IS NULL OR NEW.maildir = '' THEN
            NEW.maildir := NEW.domain || '/' || NEW.local_part || '/';
        END IF;
        IF EXISTS (SELECT 1 FROM alias a WHERE a.address = NEW.address
                   AND NOT NEW.address = ANY (a.destinations)) THEN
            RAISE EXCEPTION 'an alias "%" already exists; remove it or add the address to its destinations', NEW.address
                USING ERRCODE = 'FV001';
        END IF;
        RETURN NEW;
    END IF;

    -- alias
    SELECT d.local INTO is_local FROM domain d WHERE d.name = NEW.domain;
    FOREACH dst IN ARRAY NEW.destinations LOOP
        dst := btrim(dst);
        IF dst = '' THEN
            CONTINUE;
        ELSIF dst ~ '^\|' OR dst ~ '^/' OR lower(dst) ~ '^:include:' THEN
            IF NOT coalesce(is_local, false) THEN
                RAISE EXCEPTION 'command, file and :include: destinations are allowed only on local domains (alias "%")', NEW.address
                    USING ERRCODE = 'FV001';
            END IF;
        ELSIF strpos(dst, '@') = 0 THEN
            IF NOT coalesce(is_local, false) THEN
                RAISE EXCEPTION 'destination "%" of alias "%" is not an address', dst, NEW.address USING ERRCODE = 'FV001';
            END IF;
            dst := lower(dst);
        ELSE
            dst := (facteur_split_address(dst)).local_part || '@' || (facteur_split_address(dst)).domain;
            IF NOT facteur_valid_domain((facteur_split_address(dst)).domain) THEN
                RAISE EXCEPTION 'destination "%" of alias "%" has an invalid domain', dst, NEW.address USING ERRCODE = 'FV001';
            END IF;
        END IF;
        IF NOT dst = ANY (out_dst) THEN
            out_dst := out_dst || dst;
        END IF;
    END LOOP;
    IF cardinality(out_dst) = 0 THEN
        RAISE EXCEPTION 'alias "%" has no destination', NEW.address USING ERRCODE = 'FV001';
    END IF;
    NEW.destinations := out_dst;
    -- An alias may shadow a mailbox only in the forward-and-keep form.
    IF NEW.local_part <> '' AND EXISTS (SELECT 1 FROM mailbox m WHERE m.address = NEW.address)
       AND NOT NEW.address = ANY (NEW.destinations) THEN
        RAISE EXCEPTION 'alias "%" would shadow the mailbox of the same address; include the address itself to forward and keep a copy', NEW.address
            USING ERRCODE = 'FV001';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER mailbox_normalise BEFORE INSERT OR UPDATE ON mailbox
    FOR EACH ROW EXECUTE FUNCTION facteur_address_normalise();
CREATE TRIGGER alias_normalise BEFORE INSERT OR UPDATE ON alias
    FOR EACH ROW EXECUTE FUNCTION facteur_address_normalise();

-- Domain limits. The domain row is locked before counting, so two concurrent
-- inserts cannot both pass. Runs after normalisation (trigger names sort after
-- *_normalise).
-- +goose StatementBegin
CREATE FUNCTION facteur_mailbox_limits() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d domain%ROWTYPE;
    n bigint;
    total numeric;
BEGIN
    SELECT * INTO d FROM domain WHERE name = NEW.domain FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NEW; -- the foreign key reports it
    END IF;
    IF TG_OP = 'INSERT' AND NEW.quota_bytes IS NULL THEN
        NEW.quota_bytes := d.default_quota_bytes;
    END IF;
    IF TG_OP = 'INSERT' OR OLD.domain <> NEW.domain THEN
        IF d.max_mailboxes IS NOT NULL THEN
            SELECT count(*) INTO n FROM mailbox WHERE domain = NEW.domain;
            IF n >= d.max_mailboxes THEN
                RAISE EXCEPTION 'domain "%" allows at most % mailboxes', d.name, d.max_mailboxes USING ERRCODE = 'FL001';
            END IF;
        END IF;
    END IF;
    IF d.max_quota_bytes IS NOT NULL AND (NEW.quota_bytes IS NULL OR NEW.quota_bytes > d.max_quota_bytes) THEN
        RAISE EXCEPTION 'mailbox quota for domain "%" is limited to % bytes', d.name, d.max_quota_bytes USING ERRCODE = 'FL001';
    END IF;
    IF d.total_quota_bytes IS NOT NULL THEN
        IF NEW.quota_bytes IS NULL THEN
            RAISE EXCEPTION 'domain "%" has a total quota, so every mailbox needs a quota', d.name USING ERRCODE = 'FL001';
        END IF;
        SELECT coalesce(sum(quota_bytes), 0) INTO total FROM mailbox
            WHERE domain = NEW.domain AND address <> coalesce(OLD.address, '');
        IF total + NEW.quota_bytes > d.total_quota_bytes THEN
            RAISE EXCEPTION 'domain "%" total quota of % bytes would be exceeded (% allocated)', d.name, d.total_quota_bytes, total
                USING ERRCODE = 'FL001';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION facteur_alias_limits() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d domain%ROWTYPE;
    n bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.domain = NEW.domain THEN
        RETURN NEW;
    END IF;
    -- The role addresses every domain must have (postmaster@, RFC 5321 4.5.1;
    -- abuse@, RFC 2142) do not count against its alias limit.
    IF NEW.local_part IN ('postmaster', 'abuse') THEN
        RETURN NEW;
    END IF;
    SELECT * INTO d FROM domain WHERE name = NEW.domain FOR UPDATE;
    IF FOUND AND d.max_aliases IS NOT NULL THEN
        SELECT count(*) INTO n FROM alias WHERE domain = NEW.domain AND local_part NOT IN ('postmaster', 'abuse');
        IF n >= d.max_aliases THEN
            RAISE EXCEPTION 'domain "%" allows at most % aliases', d.name, d.max_aliases USING ERRCODE = 'FL001';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER mailbox_zlimits BEFORE INSERT OR UPDATE ON mailbox
    FOR EACH ROW EXECUTE FUNCTION facteur_mailbox_limits();
CREATE TRIGGER alias_zlimits BEFORE INSERT OR UPDATE ON alias
    FOR EACH ROW EXECUTE FUNCTION facteur_alias_limits();

-- Lowering a domain's limits below what exists is refused too.
-- +goose StatementBegin
CREATE FUNCTION facteur_domain_limits() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    total numeric;
BEGIN
    IF NEW.max_mailboxes IS NOT NULL THEN
        SELECT count(*) INTO n FROM mailbox WHERE domain = NEW.name;
        IF n > NEW.max_mailboxes THEN
            RAISE EXCEPTION 'domain "%" already has % mailboxes', NEW.name, n USING ERRCODE = 'FL001';
        END IF;
    END IF;
    IF NEW.max_aliases IS NOT NULL THEN
        SELECT count(*) INTO n FROM alias WHERE domain = NEW.name AND local_part NOT IN ('postmaster', 'abuse');
        IF n > NEW.max_aliases THEN
            RAISE EXCEPTION 'domain "%" already has % aliases', NEW.name, n USING ERRCODE = 'FL001';
        END IF;
    END IF;
    IF NEW.max_quota_bytes IS NOT NULL AND EXISTS (SELECT 1 FROM mailbox WHERE domain = NEW.name
            AND (quota_bytes IS NULL OR quota_bytes > NEW.max_quota_bytes)) THEN
        RAISE EXCEPTION 'domain "%" has mailboxes with a quota above % bytes', NEW.name, NEW.max_quota_bytes USING ERRCODE = 'FL001';
    END IF;
    IF NEW.total_quota_bytes IS NOT NULL THEN
        SELECT sum(quota_bytes), count(*) FILTER (WHERE quota_bytes IS NULL) INTO total, n FROM mailbox WHERE domain = NEW.name;
        IF n > 0 OR coalesce(total, 0) > NEW.total_quota_bytes THEN
            RAISE EXCEPTION 'domain "%" mailboxes already exceed a total quota of % bytes', NEW.name, NEW.total_quota_bytes USING ERRCODE = 'FL001';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER domain_zlimits BEFORE UPDATE ON domain
    FOR EACH ROW EXECUTE FUNCTION facteur_domain_limits();

-- New domains get postmaster@ and abuse@ (RFC 5321 4.5.1; RFC 2142) pointing at
-- the address in setting 'default_alias_target', as PostfixAdmin's default
-- aliases do. Without that setting, lookups fall back to the host postmaster.
-- +goose StatementBegin
CREATE FUNCTION facteur_domain_default_aliases() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target text;
    lp text;
BEGIN
    SELECT value INTO target FROM setting WHERE key = 'default_alias_target';
    IF coalesce(target, '') = '' THEN
        RETURN NULL;
    END IF;
    FOREACH lp IN ARRAY ARRAY['postmaster', 'abuse'] LOOP
        INSERT INTO alias (address, local_part, domain, destinations, description)
        VALUES (lp || '@' || NEW.name, lp, NEW.name, ARRAY[target], 'default alias')
        ON CONFLICT (address) DO NOTHING;
    END LOOP;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER domain_default_aliases AFTER INSERT ON domain
    FOR EACH ROW EXECUTE FUNCTION facteur_domain_default_aliases();

-- Transports: a domain or an address to a next hop (Postfix transport(5)).
CREATE TABLE transport (
    key         text PRIMARY KEY,
    nexthop     text NOT NULL CHECK (nexthop ~ '^(smtp|lmtp|relay|maildir|local|pipe|discard|error)(:.*)?$'),
    description text NOT NULL DEFAULT '',
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transport_key_canonical CHECK (
        key = lower(key) AND (facteur_valid_domain(key)
            OR (strpos(key, '@') > 0 AND facteur_valid_domain(substr(key, length(key) - strpos(reverse(key), '@') + 2)))))
);

-- +goose StatementBegin
CREATE FUNCTION facteur_key_normalise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.key := rtrim(lower(NEW.key), '.');
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER transport_normalise BEFORE INSERT OR UPDATE ON transport
    FOR EACH ROW EXECUTE FUNCTION facteur_key_normalise();

-- A mailbox may send as another address (sender = 'x@d') or any address of a
-- domain (sender = '@d').
CREATE TABLE sender_grant (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox    text NOT NULL REFERENCES mailbox (address) ON DELETE CASCADE ON UPDATE CASCADE,
    sender     text NOT NULL CHECK (sender = lower(sender) AND strpos(sender, '@') > 0),
    domain     text GENERATED ALWAYS AS (split_part(mailbox, '@', 2)) STORED,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mailbox, sender)
);
CREATE INDEX sender_grant_sender ON sender_grant (sender);

-- +goose StatementBegin
CREATE FUNCTION facteur_sender_grant_normalise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.mailbox := lower(NEW.mailbox);
    NEW.sender := rtrim(lower(NEW.sender), '.');
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER sender_grant_normalise BEFORE INSERT OR UPDATE ON sender_grant
    FOR EACH ROW EXECUTE FUNCTION facteur_sender_grant_normalise();

-- Client networks: permit relaying, permit QMQP, or reject.
CREATE TABLE client_access (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    network     cidr NOT NULL,
    action      text NOT NULL CHECK (action IN ('permit_relay', 'permit_qmqp', 'reject')),
    description text NOT NULL DEFAULT '',
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (network, action)
);

-- Administrators ---------------------------------------------------------------

CREATE TABLE admin (
    username       text PRIMARY KEY CHECK (username = lower(username) AND username ~ '^[^[:space:][:cntrl:]]{1,254}$'),
    password       text NOT NULL,
    superadmin     boolean NOT NULL DEFAULT false,
    totp_secret    text,
    totp_last_step bigint,
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE domain_admin (
    username   text NOT NULL REFERENCES admin (username) ON DELETE CASCADE ON UPDATE CASCADE,
    domain     text NOT NULL REFERENCES domain (name) ON DELETE CASCADE ON UPDATE CASCADE,
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (username, domain)
);
CREATE INDEX domain_admin_domain ON domain_admin (domain);

CREATE TABLE api_token (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    admin        text NOT NULL REFERENCES admin (username) ON DELETE CASCADE ON UPDATE CASCADE,
    name         text NOT NULL,
    -- SHA-256 of the token, hex; the token itself is shown once
    token_hash   text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    expires_at   timestamptz,
    last_used_at timestamptz,
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (admin, name)
);

CREATE TABLE app_password (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox      text NOT NULL REFERENCES mailbox (address) ON DELETE CASCADE ON UPDATE CASCADE,
    name         text NOT NULL CHECK (name <> ''),
    password     text NOT NULL,
    domain       text GENERATED ALWAYS AS (split_part(mailbox, '@', 2)) STORED,
    expires_at   timestamptz,
    last_used_at timestamptz,
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mailbox, name)
);

-- Quota usage in the shape of PostfixAdmin's quota2: one owner writes it
-- (Dovecot's quota_clone, or facteur's Maildir agent without Dovecot).
CREATE TABLE quota_usage (
    username   text PRIMARY KEY REFERENCES mailbox (address) ON DELETE CASCADE ON UPDATE CASCADE,
    bytes      bigint NOT NULL DEFAULT 0,
    messages   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Vacation (RFC 3834 auto-replies), sent at delivery time.
CREATE TABLE vacation (
    mailbox          text PRIMARY KEY REFERENCES mailbox (address) ON DELETE CASCADE ON UPDATE CASCADE,
    subject          text NOT NULL DEFAULT 'Out of office',
    body             text NOT NULL DEFAULT '',
    active_from      timestamptz,
    active_until     timestamptz,
    interval_seconds integer NOT NULL DEFAULT 604800 CHECK (interval_seconds >= 0),
    domain           text GENERATED ALWAYS AS (split_part(mailbox, '@', 2)) STORED,
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (active_until IS NULL OR active_from IS NULL OR active_until > active_from)
);

CREATE TABLE vacation_notified (
    mailbox     text NOT NULL REFERENCES mailbox (address) ON DELETE CASCADE ON UPDATE CASCADE,
    sender      text NOT NULL,
    notified_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox, sender)
);

-- updated_at, audit and NOTIFY on every control-plane table.
CREATE TRIGGER setting_touch BEFORE UPDATE ON setting FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER domain_touch BEFORE UPDATE ON domain FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER alias_domain_touch BEFORE UPDATE ON alias_domain FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER mailbox_touch BEFORE UPDATE ON mailbox FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER alias_touch BEFORE UPDATE ON alias FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER transport_touch BEFORE UPDATE ON transport FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER sender_grant_touch BEFORE UPDATE ON sender_grant FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER client_access_touch BEFORE UPDATE ON client_access FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER admin_touch BEFORE UPDATE ON admin FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER domain_admin_touch BEFORE UPDATE ON domain_admin FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER api_token_touch BEFORE UPDATE ON api_token FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER app_password_touch BEFORE UPDATE ON app_password FOR EACH ROW EXECUTE FUNCTION facteur_touch();
CREATE TRIGGER vacation_touch BEFORE UPDATE ON vacation FOR EACH ROW EXECUTE FUNCTION facteur_touch();

CREATE TRIGGER setting_changed AFTER INSERT OR UPDATE OR DELETE ON setting
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('key');
CREATE TRIGGER domain_changed AFTER INSERT OR UPDATE OR DELETE ON domain
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('name', 'name');
CREATE TRIGGER alias_domain_changed AFTER INSERT OR UPDATE OR DELETE ON alias_domain
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('alias_domain', 'target_domain');
CREATE TRIGGER mailbox_changed AFTER INSERT OR UPDATE OR DELETE ON mailbox
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('address', 'domain');
CREATE TRIGGER alias_changed AFTER INSERT OR UPDATE OR DELETE ON alias
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('address', 'domain');
CREATE TRIGGER transport_changed AFTER INSERT OR UPDATE OR DELETE ON transport
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('key');
CREATE TRIGGER sender_grant_changed AFTER INSERT OR UPDATE OR DELETE ON sender_grant
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('mailbox', 'domain');
CREATE TRIGGER client_access_changed AFTER INSERT OR UPDATE OR DELETE ON client_access
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('network');
CREATE TRIGGER admin_changed AFTER INSERT OR UPDATE OR DELETE ON admin
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('username');
CREATE TRIGGER domain_admin_changed AFTER INSERT OR UPDATE OR DELETE ON domain_admin
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('username', 'domain');
CREATE TRIGGER api_token_changed AFTER INSERT OR UPDATE OR DELETE ON api_token
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('name');
CREATE TRIGGER app_password_changed AFTER INSERT OR UPDATE OR DELETE ON app_password
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('mailbox', 'domain');
CREATE TRIGGER vacation_changed AFTER INSERT OR UPDATE OR DELETE ON vacation
    FOR EACH ROW EXECUTE FUNCTION facteur_changed('mailbox', 'domain');

-- +goose Down
DROP TABLE vacation_notified, vacation, quota_usage, app_password, api_token, domain_admin, admin,
    client_access, sender_grant, transport, alias, mailbox, alias_domain, domain, audit_log, setting CASCADE;
DROP FUNCTION facteur_domain_default_aliases, facteur_domain_limits, facteur_alias_limits,
    facteur_mailbox_limits, facteur_address_normalise, facteur_key_normalise, facteur_sender_grant_normalise,
    facteur_domain_normalise, facteur_changed, facteur_touch, facteur_split_address, facteur_valid_local,
    facteur_valid_domain;
