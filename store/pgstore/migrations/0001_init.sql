-- 0001: qim's tables, created in the Store's schema (the migration runs with
-- search_path set to it).
--
-- Ids (apps, users, devices, conversations, groups) are text in the "C"
-- collation, so that ORDER BY sorts them by bytes, as Go compares strings,
-- whatever the database's collation. Client message ids and group names may
-- hold any bytes (NUL included), so they are bytea.

-- convs holds the last sequence number of every conversation that was
-- appended to. Append bumps it under the row lock, in sorted order.
CREATE TABLE convs (
    app      text COLLATE "C" NOT NULL,
    conv     text COLLATE "C" NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (app, conv)
);

-- messages holds every stored message, proto-marshalled (qimpb.Message,
-- with Id, Seq and Timestamp set), by conversation and seq.
CREATE TABLE messages (
    app  text COLLATE "C" NOT NULL,
    conv text COLLATE "C" NOT NULL,
    seq  bigint NOT NULL,
    msg  bytea NOT NULL,
    PRIMARY KEY (app, conv, seq)
);

-- message_ids gives message ids. CACHE 1 (the default) keeps them
-- increasing across connections, in the order of the calls to nextval.
CREATE SEQUENCE message_ids AS bigint CACHE 1;

-- dedup maps a client message id to the message first stored under it.
-- created is the message's Timestamp (Unix milliseconds); PruneDedup
-- deletes by it.
CREATE TABLE dedup (
    app           text COLLATE "C" NOT NULL,
    from_user     text COLLATE "C" NOT NULL,
    client_msg_id bytea NOT NULL,
    conv          text COLLATE "C" NOT NULL,
    seq           bigint NOT NULL,
    created       bigint NOT NULL,
    PRIMARY KEY (app, from_user, client_msg_id)
);
CREATE INDEX dedup_created ON dedup (created);

-- inbox lists the 1:1 conversations of each user, written with the
-- conversation's first message.
CREATE TABLE inbox (
    app     text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    conv    text COLLATE "C" NOT NULL,
    PRIMARY KEY (app, user_id, conv)
);

-- cursors holds how far each device acknowledged each conversation.
CREATE TABLE cursors (
    app     text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    device  text COLLATE "C" NOT NULL,
    conv    text COLLATE "C" NOT NULL,
    acked   bigint NOT NULL,
    PRIMARY KEY (app, user_id, device, conv)
);

CREATE TABLE contacts (
    app     text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    contact text COLLATE "C" NOT NULL,
    PRIMARY KEY (app, user_id, contact)
);

-- chat_groups holds every group ever created. joins counts the join
-- numbers given out; members counts the members, 0 when the group is
-- closed (its id stays taken).
CREATE TABLE chat_groups (
    app     text COLLATE "C" NOT NULL,
    id      text COLLATE "C" NOT NULL,
    name    bytea NOT NULL,
    owner   text COLLATE "C" NOT NULL,
    created bigint NOT NULL,
    joins   bigint NOT NULL,
    members bigint NOT NULL,
    PRIMARY KEY (app, id)
);

-- group_members holds the current members of each group: the group's
-- last seq when they joined (their join point) and their join number (the
-- order of joining, for the owner hand-off).
CREATE TABLE group_members (
    app      text COLLATE "C" NOT NULL,
    group_id text COLLATE "C" NOT NULL,
    user_id  text COLLATE "C" NOT NULL,
    join_seq bigint NOT NULL,
    join_num bigint NOT NULL,
    PRIMARY KEY (app, group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members (app, user_id, group_id);

-- group_bans holds the users kicked from each open group and not invited
-- back by the owner since.
CREATE TABLE group_bans (
    app      text COLLATE "C" NOT NULL,
    group_id text COLLATE "C" NOT NULL,
    user_id  text COLLATE "C" NOT NULL,
    PRIMARY KEY (app, group_id, user_id)
);

-- epochs counts the CONNECTs of each device (NextEpoch).
CREATE TABLE epochs (
    app     text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    device  text COLLATE "C" NOT NULL,
    epoch   bigint NOT NULL,
    PRIMARY KEY (app, user_id, device)
);
