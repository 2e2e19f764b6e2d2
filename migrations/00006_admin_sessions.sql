-- The admin service's own state: login sessions and login throttling.
--
-- Neither table is part of the control plane: no audit, no NOTIFY (a login
-- is not a configuration change). Both are swept by the admin service.
--
-- admin_session: one row per logged-in browser. The session id (256 random
-- bits) lives only in the client's cookie; the table keeps its SHA-256, so
-- a copy of the table or of a backup cannot be replayed as a cookie. A
-- session expires after idle_timeout without requests (idle_expires_at) and
-- in any case at expires_at (the absolute timeout); logout deletes the row.
--
-- login_throttle: failed logins per key ("user:<name>", "ip:<prefix>") in
-- the current window, and until when further attempts are refused.

-- +goose Up

CREATE TABLE admin_session (
    id_hash         text PRIMARY KEY CHECK (id_hash ~ '^[0-9a-f]{64}$'),
    -- 'admin' (principal is admin.username) or 'mailbox' (principal is
    -- mailbox.address, self-service); no foreign key: the principal is
    -- checked on every request, and its removal ends the session.
    kind            text NOT NULL CHECK (kind IN ('admin', 'mailbox')),
    principal       text NOT NULL CHECK (principal <> ''),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL,
    idle_expires_at timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    remote_addr     text NOT NULL DEFAULT '',
    user_agent      text NOT NULL DEFAULT '',
    CHECK (idle_expires_at <= expires_at)
);
CREATE INDEX admin_session_principal ON admin_session (kind, principal);
CREATE INDEX admin_session_expires ON admin_session (idle_expires_at);

CREATE TABLE login_throttle (
    key           text PRIMARY KEY CHECK (key <> ''),
    failures      integer NOT NULL CHECK (failures >= 0),
    window_start  timestamptz NOT NULL,
    blocked_until timestamptz
);

-- +goose Down
DROP TABLE login_throttle, admin_session;
