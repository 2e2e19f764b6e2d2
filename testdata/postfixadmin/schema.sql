-- PostfixAdmin's PostgreSQL schema as its setup.php / upgrade.php leave it at
-- config version 1844 (PostfixAdmin 3.3), the tables that
-- `facteur import postfixadmin` reads and those it ignores. Column names,
-- types and defaults follow upgrade.php's pgsql branch; the quota2 merge
-- trigger is the one PostfixAdmin installs for Dovecot's dict quota.

CREATE TABLE config (
    id serial PRIMARY KEY,
    name character varying(20) NOT NULL DEFAULT '' UNIQUE,
    value character varying(20) NOT NULL DEFAULT ''
);

CREATE TABLE domain (
    domain character varying(255) NOT NULL PRIMARY KEY,
    description character varying(255) NOT NULL DEFAULT '',
    aliases integer NOT NULL DEFAULT 0,
    mailboxes integer NOT NULL DEFAULT 0,
    maxquota bigint NOT NULL DEFAULT 0,
    quota bigint NOT NULL DEFAULT 0,
    transport character varying(255) DEFAULT NULL,
    backupmx boolean NOT NULL DEFAULT false,
    created timestamp with time zone DEFAULT now(),
    modified timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT true,
    password_expiry integer DEFAULT 0
);
CREATE INDEX domain_domain_active ON domain (domain, active);

CREATE TABLE admin (
    username character varying(255) NOT NULL PRIMARY KEY,
    password character varying(255) NOT NULL DEFAULT '',
    created timestamp with time zone DEFAULT now(),
    modified timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT true,
    superadmin boolean NOT NULL DEFAULT false,
    phone character varying(30) NOT NULL DEFAULT '',
    email_other character varying(255) NOT NULL DEFAULT '',
    token character varying(255) NOT NULL DEFAULT '',
    token_validity timestamp with time zone DEFAULT '2000-01-01 00:00:00+00'
);

CREATE TABLE alias (
    address character varying(255) NOT NULL PRIMARY KEY,
    goto text NOT NULL,
    domain character varying(255) NOT NULL REFERENCES domain (domain),
    created timestamp with time zone DEFAULT now(),
    modified timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT true
);
CREATE INDEX alias_address_active ON alias (address, active);
CREATE INDEX alias_domain_idx ON alias (domain);

CREATE TABLE alias_domain (
    alias_domain character varying(255) NOT NULL PRIMARY KEY
        REFERENCES domain (domain) ON UPDATE CASCADE ON DELETE CASCADE,
    target_domain character varying(255) NOT NULL
        REFERENCES domain (domain) ON UPDATE CASCADE ON DELETE CASCADE,
    created timestamp with time zone DEFAULT now(),
    modified timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT true
);
CREATE INDEX alias_domain_active ON alias_domain (alias_domain, active);

-- domain is 'ALL' for superadmins: PostfixAdmin keeps a pseudo-domain row 'ALL'.
CREATE TABLE domain_admins (
    username character varying(255) NOT NULL,
    domain character varying(255) NOT NULL REFERENCES domain (domain),
    created timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT true
);
CREATE INDEX domain_admins_username ON domain_admins (username);

CREATE TABLE mailbox (
    username character varying(255) NOT NULL PRIMARY KEY,
    password character varying(255) NOT NULL DEFAULT '',
    name character varying(255) NOT NULL DEFAULT '',
    maildir character varying(255) NOT NULL DEFAULT '',
    quota bigint NOT NULL DEFAULT 0,
    created timestamp with time zone DEFAULT now(),
    modified timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT true,
    domain character varying(255) REFERENCES domain (domain),
    local_part character varying(255) NOT NULL,
    phone character varying(30) NOT NULL DEFAULT '',
    email_other character varying(255) NOT NULL DEFAULT '',
    token character varying(255) NOT NULL DEFAULT '',
    token_validity timestamp with time zone DEFAULT '2000-01-01 00:00:00+00',
    password_expiry timestamp with time zone DEFAULT '2000-01-01 00:00:00+00'
);
CREATE INDEX mailbox_username_active ON mailbox (username, active);
CREATE INDEX mailbox_domain_idx ON mailbox (domain);

CREATE TABLE vacation (
    email character varying(255) NOT NULL PRIMARY KEY,
    subject character varying(255) NOT NULL,
    body text NOT NULL DEFAULT '',
    cache text NOT NULL DEFAULT '',
    domain character varying(255) NOT NULL REFERENCES domain (domain),
    created timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT true,
    modified timestamp with time zone DEFAULT now(),
    activefrom timestamp with time zone NOT NULL DEFAULT '2000-01-01 00:00:00+00',
    activeuntil timestamp with time zone NOT NULL DEFAULT '2038-01-18 00:00:00+00',
    interval_time integer NOT NULL DEFAULT 0
);
CREATE INDEX vacation_email_active ON vacation (email, active);

CREATE TABLE vacation_notification (
    on_vacation character varying(255) NOT NULL REFERENCES vacation (email) ON DELETE CASCADE,
    notified character varying(255) NOT NULL,
    notified_at timestamp with time zone NOT NULL DEFAULT now(),
    PRIMARY KEY (on_vacation, notified)
);

CREATE TABLE log (
    "timestamp" timestamp with time zone DEFAULT now(),
    username character varying(255) NOT NULL DEFAULT '',
    domain character varying(255) NOT NULL DEFAULT '',
    action character varying(255) NOT NULL DEFAULT '',
    data text NOT NULL DEFAULT '',
    id serial PRIMARY KEY
);
CREATE INDEX log_domain_timestamp ON log (domain, "timestamp");

CREATE TABLE fetchmail (
    id serial PRIMARY KEY,
    domain character varying(255) DEFAULT '',
    mailbox character varying(255) NOT NULL,
    src_server character varying(255) NOT NULL,
    src_auth character varying(15) NOT NULL,
    src_user character varying(255) NOT NULL,
    src_password character varying(255) NOT NULL,
    src_folder character varying(255) NOT NULL,
    poll_time integer NOT NULL DEFAULT 10,
    fetchall boolean NOT NULL DEFAULT false,
    keep boolean NOT NULL DEFAULT false,
    protocol character varying(15) NOT NULL,
    usessl boolean NOT NULL DEFAULT false,
    sslcertck boolean NOT NULL DEFAULT false,
    sslcertpath character varying(255) DEFAULT '',
    sslfingerprint character varying(255) DEFAULT '',
    extra_options text,
    returned_text text,
    mda character varying(255) NOT NULL DEFAULT '',
    date timestamp with time zone DEFAULT now(),
    created timestamp with time zone DEFAULT now(),
    modified timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT false
);

-- Dovecot's old quota dict table and the one PostfixAdmin reads (quota2).
CREATE TABLE quota (
    username character varying(255) NOT NULL,
    path character varying(100) NOT NULL,
    current bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (username, path)
);

CREATE TABLE quota2 (
    username character varying(100) NOT NULL PRIMARY KEY,
    bytes bigint NOT NULL DEFAULT 0,
    messages integer NOT NULL DEFAULT 0
);

CREATE OR REPLACE FUNCTION merge_quota2() RETURNS TRIGGER AS $$
BEGIN
    IF NEW.messages < 0 OR NEW.messages IS NULL THEN
        -- ugly kludge: we came here from this function, really do try to insert
        IF NEW.messages IS NULL THEN
            NEW.messages = 0;
        ELSE
            NEW.messages = -NEW.messages;
        END IF;
        return NEW;
    END IF;

    LOOP
        UPDATE quota2 SET bytes = bytes + NEW.bytes,
            messages = messages + NEW.messages
            WHERE username = NEW.username;
        IF found THEN
            RETURN NULL;
        END IF;

        BEGIN
            IF NEW.messages = 0 THEN
                INSERT INTO quota2 (bytes, messages, username) VALUES (NEW.bytes, NULL, NEW.username);
            ELSE
                INSERT INTO quota2 (bytes, messages, username) VALUES (NEW.bytes, -NEW.messages, NEW.username);
            END IF;
            return NULL;
        EXCEPTION WHEN unique_violation THEN
            -- someone just inserted the record, update it
        END;
    END LOOP;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER mergequota2 BEFORE INSERT ON quota2
    FOR EACH ROW EXECUTE PROCEDURE merge_quota2();
