-- The queue's index. Message bodies live in the spool of the node named on
-- each message; these rows say what is to be delivered where, and how it went.
--
-- Recipient states (DESIGN.md): queued -> delivering -> delivered | deferred |
-- bounced | expired, with deferred -> delivering on retry. Holding is a flag on
-- the message set by an operator; a held message is never claimed.

-- +goose Up

CREATE TABLE queue_message (
    id            text PRIMARY KEY CHECK (id ~ '^[0-9A-Za-z]{8,32}$'),
    node          text NOT NULL,
    spool_key     text NOT NULL,
    sender        text NOT NULL,               -- '' is the null sender <>
    size          bigint NOT NULL CHECK (size >= 0),
    arrived_at    timestamptz NOT NULL DEFAULT now(),
    message_id    text NOT NULL DEFAULT '',
    client_addr   text NOT NULL DEFAULT '',
    client_helo   text NOT NULL DEFAULT '',
    protocol      text NOT NULL DEFAULT '',    -- ESMTP, ESMTPS, ESMTPSA, QMQP, local
    auth_user     text,
    local_user    text,
    -- RFC 3461 envelope parameters and body type (RFC 6152, RFC 6531)
    dsn_ret       text CHECK (dsn_ret IN ('FULL', 'HDRS')),
    dsn_envid     text,
    body_type     text NOT NULL DEFAULT '7BIT' CHECK (body_type IN ('7BIT', '8BITMIME', 'BINARYMIME')),
    smtputf8      boolean NOT NULL DEFAULT false,
    -- what kind of message this is, so that a failed DSN is not answered with another
    kind          text NOT NULL DEFAULT 'mail' CHECK (kind IN ('mail', 'dsn', 'double-bounce', 'auto-reply')),
    held          boolean NOT NULL DEFAULT false,
    hold_reason   text,
    delay_warned  boolean NOT NULL DEFAULT false
);
CREATE INDEX queue_message_node ON queue_message (node);
CREATE INDEX queue_message_arrived ON queue_message (arrived_at);
CREATE INDEX queue_message_sender ON queue_message (sender);

CREATE TABLE queue_recipient (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id         text NOT NULL REFERENCES queue_message (id) ON DELETE CASCADE,
    address          text NOT NULL,                 -- final recipient after expansion
    orig_address     text NOT NULL,                 -- the RCPT TO this came from
    domain           text NOT NULL,                 -- address's domain, for grouping and views
    transport        text NOT NULL,                 -- next hop, e.g. maildir, smtp:[mx]:25, lmtp:unix:/p
    -- RFC 3461: NOTIFY (NULL = default), ORCPT as given
    dsn_notify       text,
    dsn_orcpt        text,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'delivering', 'delivered', 'deferred', 'bounced', 'expired')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_reply       text NOT NULL DEFAULT '',
    last_dsn         text NOT NULL DEFAULT '',
    lease_owner      text,
    lease_expires_at timestamptz,
    dsn_pending      boolean NOT NULL DEFAULT false,
    delay_notified   boolean NOT NULL DEFAULT false,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'delivering') = (lease_owner IS NOT NULL))
);
CREATE INDEX queue_recipient_queue_id ON queue_recipient (queue_id);
CREATE INDEX queue_recipient_due ON queue_recipient (next_attempt_at) WHERE status IN ('queued', 'deferred');
CREATE INDEX queue_recipient_lease ON queue_recipient (lease_expires_at) WHERE status = 'delivering';
CREATE INDEX queue_recipient_dsn_pending ON queue_recipient (queue_id) WHERE dsn_pending;
CREATE INDEX queue_recipient_domain ON queue_recipient (domain, status);

-- One row per delivery attempt (Postfix's mail log lines, as a table).
CREATE TABLE delivery_log (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    at            timestamptz NOT NULL DEFAULT now(),
    queue_id      text NOT NULL,
    node          text NOT NULL DEFAULT '',
    sender        text NOT NULL DEFAULT '',
    recipient     text NOT NULL,
    orig_recipient text NOT NULL DEFAULT '',
    domain        text NOT NULL DEFAULT '',
    transport     text NOT NULL DEFAULT '',
    relay         text NOT NULL DEFAULT '',
    delay_seconds double precision NOT NULL DEFAULT 0,
    dsn           text NOT NULL DEFAULT '',
    status        text NOT NULL CHECK (status IN ('sent', 'deferred', 'bounced', 'expired')),
    reply         text NOT NULL DEFAULT '',
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE delivery_log_default PARTITION OF delivery_log DEFAULT;
CREATE INDEX delivery_log_queue_id ON delivery_log (queue_id);
CREATE INDEX delivery_log_recipient ON delivery_log (recipient, at);
CREATE INDEX delivery_log_domain ON delivery_log (domain, at);
CREATE INDEX delivery_log_at ON delivery_log (at);

-- The envelope summary of every accepted message; kept after the message
-- leaves the hot queue tables.
CREATE TABLE accepted_log (
    queue_id     text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    node         text NOT NULL DEFAULT '',
    sender       text NOT NULL,
    recipients   integer NOT NULL,
    size         bigint NOT NULL,
    message_id   text NOT NULL DEFAULT '',
    client_addr  text NOT NULL DEFAULT '',
    protocol     text NOT NULL DEFAULT '',
    auth_user    text,
    local_user   text,
    tls          text NOT NULL DEFAULT '',
    finished_at  timestamptz,
    PRIMARY KEY (queue_id, at)
) PARTITION BY RANGE (at);
CREATE TABLE accepted_log_default PARTITION OF accepted_log DEFAULT;
CREATE INDEX accepted_log_sender ON accepted_log (sender, at);

-- Daily partitions for the log tables, from yesterday to `ahead` days from
-- now. facteur serve and facteur prune call it; the DEFAULT partition catches
-- anything outside.
-- +goose StatementBegin
CREATE FUNCTION facteur_ensure_partitions(ahead integer DEFAULT 7) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t text;
    d date;
    part text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_log', 'delivery_log', 'accepted_log'] LOOP
        FOR d IN SELECT generate_series(current_date - 1, current_date + ahead, interval '1 day')::date LOOP
            part := t || '_' || to_char(d, 'YYYYMMDD');
            IF to_regclass(part) IS NULL THEN
                BEGIN
                    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                                   part, t, d::timestamptz, (d + 1)::timestamptz);
                EXCEPTION WHEN check_violation OR duplicate_table THEN
                    -- rows for that day already sit in the default partition,
                    -- or another process made it first: leave it
                    NULL;
                END;
            END IF;
        END LOOP;
    END LOOP;
END
$$;
-- +goose StatementEnd

SELECT facteur_ensure_partitions(7);

-- +goose Down
DROP FUNCTION facteur_ensure_partitions;
DROP TABLE accepted_log, delivery_log, queue_recipient, queue_message CASCADE;
