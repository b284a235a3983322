-- 0003: read cursors, settings, and the index that receipts read
-- delivered cursors through.

-- reads holds each user's read cursors of each conversation: read_seq, the
-- user's own (SetRead; Append moves it to the user's own messages), and
-- shared_seq, the one others see (SetRead with share). Both only grow
-- (GREATEST).
CREATE TABLE reads (
    app        text COLLATE "C" NOT NULL,
    user_id    text COLLATE "C" NOT NULL,
    conv       text COLLATE "C" NOT NULL,
    read_seq   bigint NOT NULL DEFAULT 0,
    shared_seq bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (app, user_id, conv)
);

-- prefs holds each user's settings (store.Prefs), a row once set.
CREATE TABLE prefs (
    app                text COLLATE "C" NOT NULL,
    user_id            text COLLATE "C" NOT NULL,
    hide_read_receipts boolean NOT NULL,
    PRIMARY KEY (app, user_id)
);

-- cursors_by_conv finds the devices' cursors of one conversation for given
-- users (Receipts, DeliveredTo, the peer's in Inbox) without reading every
-- cursor of each user, as the primary key (app, user_id, device, conv)
-- would. acked is not in it, so SetAcked's updates stay HOT.
CREATE INDEX cursors_by_conv ON cursors (app, conv, user_id);
