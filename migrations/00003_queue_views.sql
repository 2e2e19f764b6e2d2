-- The queue manager's columns and the operators' views of the queue.
--
-- Columns: a pending DSN says which kind of notice it is (dsn_action, RFC
-- 3464 2.3.3), so that the notice enqueued is the one the recipient's last
-- settlement asked for, and the relay of the last attempt is kept for DSNs
-- (Remote-MTA) and for mailq.
--
-- Views (read-only; every one is one SELECT away from "what is stuck for
-- example.com?"):
--
--   mailq                 one row per message still in the queue, with its
--                         recipients' states and last replies
--   queue_by_domain       per recipient domain: what the queue holds now
--   delivery_stats_daily  per day and recipient domain: what delivery_log
--                         recorded (one row per attempt)
--
-- Examples:
--
--   -- everything deferred for example.com, oldest first
--   SELECT queue_id, arrived_at, sender, recipients_detail FROM mailq
--   WHERE queue_id IN (SELECT queue_id FROM queue_recipient
--                      WHERE domain = 'example.com' AND status = 'deferred')
--   ORDER BY arrived_at;
--
--   -- which domains have mail waiting, and why
--   SELECT domain, deferred, oldest_arrival, top_deferral_reasons
--   FROM queue_by_domain ORDER BY deferred DESC LIMIT 20;
--
--   -- today's bounces per domain
--   SELECT domain, bounced, expired, top_deferral_reasons
--   FROM delivery_stats_daily WHERE day = current_date ORDER BY bounced DESC;

-- +goose Up

ALTER TABLE queue_recipient
    ADD COLUMN dsn_action text CHECK (dsn_action IN ('failed', 'delayed', 'delivered', 'relayed')),
    ADD COLUMN last_relay text NOT NULL DEFAULT '',
    ADD CONSTRAINT queue_recipient_dsn_action_set CHECK (NOT dsn_pending OR dsn_action IS NOT NULL);

-- Recipients in a final state: messages that may be finished are found
-- through this small index (finished messages leave the table at once, so it
-- only holds the final recipients of messages still partly in flight).
CREATE INDEX queue_recipient_final ON queue_recipient (queue_id)
    WHERE status IN ('delivered', 'bounced', 'expired');

-- mailq: one row per queued message (Postfix's mailq, as a table).
--   queue_id, node, arrived_at, sender ('' is <>), size, kind, held, hold_reason
--   recipients                   number of recipients still in the queue
--   queued .. expired            how many are in each state
--   next_attempt_at              the earliest retry of a waiting recipient
--   recipients_detail            [{address, orig_address, status, attempts,
--                                  next_attempt_at, last_reply, last_relay}]
--                                in recipient order
CREATE VIEW mailq AS
SELECT m.id AS queue_id,
       m.node,
       m.arrived_at,
       m.sender,
       m.size,
       m.kind,
       m.held,
       m.hold_reason,
       count(r.id) AS recipients,
       count(r.id) FILTER (WHERE r.status = 'queued') AS queued,
       count(r.id) FILTER (WHERE r.status = 'delivering') AS delivering,
       count(r.id) FILTER (WHERE r.status = 'deferred') AS deferred,
       count(r.id) FILTER (WHERE r.status = 'delivered') AS delivered,
       count(r.id) FILTER (WHERE r.status = 'bounced') AS bounced,
       count(r.id) FILTER (WHERE r.status = 'expired') AS expired,
       min(r.next_attempt_at) FILTER (WHERE r.status IN ('queued', 'deferred')) AS next_attempt_at,
       coalesce(jsonb_agg(jsonb_build_object(
                    'address', r.address,
                    'orig_address', r.orig_address,
                    'status', r.status,
                    'attempts', r.attempts,
                    'next_attempt_at', r.next_attempt_at,
                    'last_reply', r.last_reply,
                    'last_relay', r.last_relay) ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL),
                '[]'::jsonb) AS recipients_detail
FROM queue_message m
LEFT JOIN queue_recipient r ON r.queue_id = m.id
GROUP BY m.id;

COMMENT ON VIEW mailq IS 'One row per message in the queue with its recipients'' states and last replies (Postfix mailq).';

-- queue_by_domain: per recipient domain, what the queue holds now.
--   domain, recipients, queued, delivering, deferred, held (recipients of held
--   messages), delivered/bounced/expired (final, waiting for the rest of their
--   message or for its DSN), oldest_arrival, next_attempt_at,
--   top_deferral_reasons: the three most frequent last replies of deferred
--   recipients, [{reason, recipients}]
CREATE VIEW queue_by_domain AS
SELECT r.domain,
       count(*) AS recipients,
       count(*) FILTER (WHERE r.status = 'queued') AS queued,
       count(*) FILTER (WHERE r.status = 'delivering') AS delivering,
       count(*) FILTER (WHERE r.status = 'deferred') AS deferred,
       count(*) FILTER (WHERE m.held) AS held,
       count(*) FILTER (WHERE r.status = 'delivered') AS delivered,
       count(*) FILTER (WHERE r.status = 'bounced') AS bounced,
       count(*) FILTER (WHERE r.status = 'expired') AS expired,
       min(m.arrived_at) AS oldest_arrival,
       min(r.next_attempt_at) FILTER (WHERE r.status IN ('queued', 'deferred') AND NOT m.held) AS next_attempt_at,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('reason', t.reason, 'recipients', t.n) ORDER BY t.n DESC, t.reason), '[]'::jsonb)
        FROM (SELECT left(d.last_reply, 200) AS reason, count(*) AS n
              FROM queue_recipient d
              WHERE d.domain = r.domain AND d.status = 'deferred'
              GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3) t) AS top_deferral_reasons
FROM queue_recipient r
JOIN queue_message m ON m.id = r.queue_id
GROUP BY r.domain;

COMMENT ON VIEW queue_by_domain IS 'Per recipient domain: queued, delivering, deferred, held and final recipients now in the queue, the oldest message and the top deferral reasons.';

-- delivery_stats_daily: per day (UTC date of the attempt) and recipient
-- domain, from delivery_log, so counts are of attempts: a recipient deferred
-- three times then delivered counts 3 deferred and 1 delivered.
--   day, domain, attempts, delivered, deferred, bounced, expired, messages
--   (distinct queue ids), recipients (distinct recipients), avg_delay_seconds
--   and max_delay_seconds (from arrival to the attempt, of deliveries),
--   oldest_message (the delay of the oldest message attempted, seconds),
--   top_deferral_reasons: the three most frequent replies of deferred attempts
CREATE VIEW delivery_stats_daily AS
SELECT l.day,
       l.domain,
       count(*) AS attempts,
       count(*) FILTER (WHERE l.status = 'sent') AS delivered,
       count(*) FILTER (WHERE l.status = 'deferred') AS deferred,
       count(*) FILTER (WHERE l.status = 'bounced') AS bounced,
       count(*) FILTER (WHERE l.status = 'expired') AS expired,
       count(DISTINCT l.queue_id) AS messages,
       count(DISTINCT l.recipient) AS recipients,
       avg(l.delay_seconds) FILTER (WHERE l.status = 'sent') AS avg_delay_seconds,
       max(l.delay_seconds) FILTER (WHERE l.status = 'sent') AS max_delay_seconds,
       max(l.delay_seconds) AS oldest_message,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('reason', t.reason, 'attempts', t.n) ORDER BY t.n DESC, t.reason), '[]'::jsonb)
        FROM (SELECT left(d.reply, 200) AS reason, count(*) AS n
              FROM delivery_log d
              WHERE d.domain = l.domain AND d.status = 'deferred'
                AND d.at >= l.day::timestamp AT TIME ZONE 'UTC'
                AND d.at < (l.day + 1)::timestamp AT TIME ZONE 'UTC'
              GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3) t) AS top_deferral_reasons
FROM (SELECT (at AT TIME ZONE 'UTC')::date AS day, domain, status, queue_id, recipient, delay_seconds
      FROM delivery_log) l
GROUP BY l.day, l.domain;

COMMENT ON VIEW delivery_stats_daily IS 'Per UTC day and recipient domain: delivery attempts by outcome (from delivery_log), delays and the top deferral reasons.';

-- +goose Down
DROP VIEW delivery_stats_daily, queue_by_domain, mailq;
DROP INDEX queue_recipient_final;
ALTER TABLE queue_recipient
    DROP CONSTRAINT queue_recipient_dsn_action_set,
    DROP COLUMN last_relay,
    DROP COLUMN dsn_action;
