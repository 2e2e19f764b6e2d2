-- Header fields that facteur adds to a message once it is received, kept
-- beside the spool file instead of in it (issue 8): the Authentication-Results
-- field of inbound mail (with the DMARC quarantine mark) and the
-- DKIM-Signature of submitted mail. Both are known only after the whole
-- message has been read, when the spool file already starts with
-- facteur's Received:; rewriting the file to put them in front would cost a
-- second copy of every message. Delivery (mta/queue, deliver.Message.Open)
-- reads prepend and then the spool file, so every agent sends them first.
-- '' is none. size counts them.

-- +goose Up
ALTER TABLE queue_message ADD COLUMN prepend text NOT NULL DEFAULT ''
    CHECK (length(prepend) <= 65536);

-- +goose Down
ALTER TABLE queue_message DROP COLUMN prepend;
