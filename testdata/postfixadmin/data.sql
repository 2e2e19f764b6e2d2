-- A PostfixAdmin installation to import (schema.sql first). Every mailbox's
-- password is "pw-<local part>", stored as one of PostfixAdmin's `encrypt`
-- settings (the comment on each row names it); the admins' are
-- "pw-admin", "pw-oldsuper", "pw-dom" and "pw-inactive". Hashes were made
-- with Python's crypt(3) (glibc/libxcrypt, as PHP's crypt() and MySQL's
-- ENCRYPT() make them) and Dovecot 2.3.19's doveadm pw.

INSERT INTO config (name, value) VALUES ('version', '1844');

INSERT INTO domain (domain, description, aliases, mailboxes, maxquota, quota, transport, backupmx, active, created) VALUES
    -- the pseudo-domain of superadmins' domain_admins rows
    ('ALL', '', 0, 0, 0, 0, '', false, true, '2015-01-01 00:00:00+00'),
    -- limits: 50 aliases, 30 mailboxes, 2048 MB per mailbox, 10240 MB in all
    ('example.org', 'Example', 50, 30, 2048, 10240, 'virtual', false, true, '2016-03-04 05:06:07+00'),
    -- forwarding only: mailboxes -1 (disabled), the rest 0 (unlimited)
    ('other.example', 'Forwards', 0, -1, 0, 0, 'virtual:', false, true, '2017-01-01 00:00:00+00'),
    ('free.example', '', 0, 0, 0, 0, NULL, false, true, '2018-01-01 00:00:00+00'),
    -- aliases -1: none allowed; a Postfix-relative LMTP transport; inactive
    ('limited.example', 'Closed', -1, 5, 100, 0, 'lmtp:unix:private/dovecot-lmtp', false, false, '2019-01-01 00:00:00+00'),
    ('relay.example', 'Backup MX', 0, 0, 0, 0, 'smtp:[mx.relay.example]:25', true, true, '2020-01-01 00:00:00+00'),
    -- PostfixAdmin makes an alias domain a domain first
    ('alias.example', '', 0, 0, 0, 0, 'virtual', false, true, '2021-01-01 00:00:00+00');

INSERT INTO alias_domain (alias_domain, target_domain, active) VALUES ('alias.example', 'example.org', true);

INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain, active, created) VALUES
    ('alice@example.org',   '$1$Xy7qPz9a$HkFz2/OYEO2OS9FQRyyjw0', 'Alice', 'example.org/alice/', 104857600, 'alice', 'example.org', true, '2016-04-01 10:00:00+00'), -- md5crypt
    ('carol@example.org',   '$2y$10$abcdefghijklmnopqrstuup.YiFjNbSyQpV2Sa3pRcFCKgs8ob2Pm', 'Carol', 'example.org/carol.archive/', 52428800, 'carol', 'example.org', true, NULL), -- php_crypt:BLOWFISH
    ('dave@example.org',    '$5$rounds=5000$Hd7sPq2LmZ9xVb3c$YcPGFrZB9romTQxL8/TlejbzZ3VWdSLgyN7o5blbFN/', 'Dave', 'example.org/dave/', 52428800, 'dave', 'example.org', true, NULL), -- php_crypt:SHA256
    ('erin@example.org',    '0d9ad05bbcbe0f0f1861845c4505f101', 'Erin', 'example.org/erin/', 52428800, 'erin', 'example.org', true, NULL), -- md5
    ('frank@example.org',   'pw-frank', 'Frank', 'example.org/frank/', 52428800, 'frank', 'example.org', true, NULL), -- cleartext
    ('grace@example.org',   'abLmnkKpfskq2', 'Grace', 'example.org/grace/', 52428800, 'grace', 'example.org', true, NULL), -- system, mysql_encrypt (DES crypt)
    ('heidi@example.org',   '{SHA512-CRYPT}$6$0iRrOn.c2Ml1E/Cm$Hyr0/irm9yFWE1JpDOWLkWlX8b6y41dhZTKwZ8UslI.yN/oINfNlcuw9r0Uam1kX91K4hUBRerqIHI0c25KT61', 'Heidi', 'example.org/heidi/', 52428800, 'heidi', 'example.org', true, NULL), -- dovecot:SHA512-CRYPT
    ('ivan@example.org',    '{BLF-CRYPT}$2y$05$rwZlRAAYPCRKqO4al4IAyun9oGqaJFcHx.B1jNIHKfQIVOYTrU39u', 'Ivan', 'example.org/ivan/', 52428800, 'ivan', 'example.org', true, NULL), -- dovecot:BLF-CRYPT
    ('judy@example.org',    '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$b7xtg8PwbzRuQgVQQnnPKw$OMfq56P25/98vTDsTNYCza3EcLZLMG+t+GMcIBEgGMU', 'Judy', 'example.org/judy/', 52428800, 'judy', 'example.org', true, NULL), -- dovecot:ARGON2ID
    ('mallory@example.org', '{SSHA512}gXZV+2dTKX/NoAeqDh19UqxwTwrJr74OSrUKcbD3JE444GNx0oMTx4EoHihKw5Ic05qgue6NldS4TdNNT8e2gV5bDhI=', 'Mallory', 'example.org/mallory/', 52428800, 'mallory', 'example.org', true, NULL), -- dovecot:SSHA512
    ('niaj@example.org',    '{CRAM-MD5}b575f474993254ac21c64a0b47d56f8daa461761dfb2db360b5510b03ab83c86', 'Niaj', 'example.org/niaj/', 52428800, 'niaj', 'example.org', true, NULL), -- dovecot:CRAM-MD5
    ('olivia@example.org',  '{SHA512-CRYPT.B64}JDYkOC9kUUxlTURNZ3FCSGwuZyRqOWtVYnBDOU9VVDN3dGxTaTBlL0k0N01yVXRLOFI1eWlxZlZPTEdhMi5lb1JKMjNlekFzb25PM1R4aGFsdFlINmZwbmhmQW9DT2REcDM3T2dNQnQ1Lw==', 'Olivia', 'example.org/olivia/', 52428800, 'olivia', 'example.org', true, NULL), -- sha512.b64
    ('peggy@example.org',   '{MD5RAW}b342d66f1fb1e0b2712aa9c1a84b9768', 'Peggy', 'example.org/peggy/', 52428800, 'peggy', 'example.org', true, NULL), -- authlib, flavor md5raw
    ('rupert@example.org',  '{MD5}r3pxvKuqOQ9Gfu19qqqVHw==', 'Rupert', 'example.org/rupert/', 52428800, 'rupert', 'example.org', true, NULL), -- authlib, flavor md5
    ('sybil@example.org',   '{PLAIN-MD5}7a67f920f55f835a889a04ffe3efed3c', 'Sybil', 'example.org/sybil/', 52428800, 'sybil', 'example.org', true, NULL), -- dovecot:PLAIN-MD5
    ('trent@example.org',   '{SHA256-CRYPT}$5$jlb.J7q.IkphnSt1$wW4yEpiMQQ9w3anK3IDtSi3BfV508nHJCYhXSAEUuFB', 'Trent', 'example.org/trent/', 52428800, 'trent', 'example.org', false, NULL), -- dovecot:SHA256-CRYPT; inactive
    ('bob@free.example',    '$6$rounds=5000$Kq3vLm8Pz2Wn4Rt6$CxHMAOFCUaPCmwZuBRZbalVYhj.gV9GhBU4ovXErqEVmOKRGekjwpp4PWSv.NiLDx3Hxq5g7J1R39o9.EMnhv.', 'Bob', 'free.example/bob/', 0, 'bob', 'free.example', true, NULL), -- php_crypt:SHA512, PostfixAdmin's default; quota 0: unlimited
    ('walter@limited.example', '$1$Xy7qPz9a$HkFz2/OYEO2OS9FQRyyjw0', 'Walter', 'limited.example/walter/', 52428800, 'walter', 'limited.example', true, NULL),
    -- cannot be imported: a mailbox in an alias domain, a maildir outside the mail root
    ('x@alias.example',     '$1$Xy7qPz9a$HkFz2/OYEO2OS9FQRyyjw0', '', 'alias.example/x/', 0, 'x', 'alias.example', true, NULL),
    ('escape@free.example', '$1$Xy7qPz9a$HkFz2/OYEO2OS9FQRyyjw0', '', '../escape/', 0, 'escape', 'free.example', true, NULL);

-- The self-alias PostfixAdmin writes for every mailbox ...
INSERT INTO alias (address, goto, domain, active) SELECT username, username, domain, true FROM mailbox;
-- ... edited by its "forward" and vacation pages:
UPDATE alias SET goto = 'alice@example.org,alice.backup@mail.example.net' WHERE address = 'alice@example.org';
UPDATE alias SET goto = 'carol@example.org,carol#example.org@autoreply.example.org' WHERE address = 'carol@example.org';
UPDATE alias SET goto = 'dave@elsewhere.example' WHERE address = 'dave@example.org';
UPDATE alias SET goto = 'erin@example.org,erin#example.org@autoreply.example.org,erin@home.example' WHERE address = 'erin@example.org';

INSERT INTO alias (address, goto, domain, active) VALUES
    ('@other.example', 'alice@example.org', 'other.example', true),
    ('team@example.org', 'alice@example.org, bob@free.example,carol@example.org', 'example.org', true),
    ('postmaster@example.org', 'alice@example.org', 'example.org', true),
    ('abuse@example.org', 'alice@example.org', 'example.org', true),
    ('old@example.org', 'bob@free.example', 'example.org', false),
    ('sales@other.example', 'Dave@Example.ORG', 'other.example', true),
    -- cannot be imported: an alias in an alias domain, a destination that is no address
    ('postmaster@alias.example', 'alice@example.org', 'alias.example', true),
    ('broken@example.org', 'not an address', 'example.org', true);

INSERT INTO vacation (email, subject, body, domain, active, activefrom, activeuntil, interval_time) VALUES
    ('carol@example.org', 'Away', 'Back on Monday.', 'example.org', true, '2000-01-01 00:00:00+00', '2038-01-18 00:00:00+00', 0),
    ('erin@example.org', 'Holidays', 'Back in February.', 'example.org', true, '2026-01-01 00:00:00+00', '2026-02-01 00:00:00+00', 86400),
    ('frank@example.org', 'Old trip', 'Gone.', 'example.org', false, '2000-01-01 00:00:00+00', '2038-01-18 00:00:00+00', 0);
INSERT INTO vacation_notification (on_vacation, notified, notified_at) VALUES
    ('carol@example.org', 'someone@remote.example', '2025-06-01 12:00:00+00');

INSERT INTO quota2 (username, bytes, messages) VALUES ('alice@example.org', 1234567, 42);

INSERT INTO admin (username, password, superadmin, active) VALUES
    ('admin@example.org', '$1$Adm1nSlt$ZyUm/RRRE/NxywVDThp8J.', true, true),
    ('old-super@example.org', '$1$OldSuper$d7jFIqxAKa5IXUs65MkCy1', false, true),
    ('dom@example.org', '$1$DomAdmin$StaBI06zjaK4TAoPDcUsq0', false, true),
    ('inactive@example.org', '$1$Inactive$vnFxLcV/NsvHgGAw96sWw/', false, false);
INSERT INTO domain_admins (username, domain, active) VALUES
    ('admin@example.org', 'ALL', true),
    ('old-super@example.org', 'ALL', true),
    ('dom@example.org', 'example.org', true),
    ('dom@example.org', 'other.example', true),
    ('inactive@example.org', 'free.example', true);

INSERT INTO fetchmail (domain, mailbox, src_server, src_auth, src_user, src_password, src_folder, protocol)
    VALUES ('example.org', 'alice@example.org', 'pop.example.net', 'password', 'alice', 'c2VjcmV0', '', 'POP3');
INSERT INTO log (username, domain, action, data) VALUES ('admin@example.org', 'example.org', 'create_domain', 'example.org');
