-- 0002: the offline-push outbox (store.PushJob), one for the whole schema.
--
-- A job is inserted by Append in the transaction of its message, with
-- the message's id as its own. users is NULL until RetryPush stores the
-- users still to notify (an empty array is a list of none). next is when
-- the job is due, in Unix milliseconds; ClaimPush takes the due jobs in
-- (next, id) order through push_outbox_next and moves next to the end of
-- their lease.
CREATE TABLE push_outbox (
    id       bigint PRIMARY KEY,
    app      text COLLATE "C" NOT NULL,
    conv     text COLLATE "C" NOT NULL,
    seq      bigint NOT NULL,
    users    text[],
    attempts integer NOT NULL DEFAULT 0,
    next     bigint NOT NULL
);
CREATE INDEX push_outbox_next ON push_outbox (next, id);
