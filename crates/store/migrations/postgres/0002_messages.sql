-- Message history, written by the history writer (cluster) or the standalone journal.
-- `position` is the log position (Kafka offset + 1) within `epoch`; `ts_ms` serves the dedupe
-- window: a message is stored only if no earlier one of the same room, sender and client_id
-- lies within the window.
CREATE TABLE messages (
    id        TEXT PRIMARY KEY,
    room      TEXT NOT NULL,
    epoch     TEXT NOT NULL,
    position  BIGINT NOT NULL,
    from_user TEXT NOT NULL,
    from_name TEXT NOT NULL,
    body      TEXT NOT NULL,
    client_id TEXT NOT NULL,
    ts        TEXT NOT NULL,
    ts_ms     BIGINT NOT NULL
);
CREATE UNIQUE INDEX messages_room_position ON messages (room, epoch, position);
CREATE INDEX messages_dedupe ON messages (room, from_user, client_id, ts_ms);

-- How far the history writer got, per log partition: every message with a smaller position is
-- stored. Written in the same transaction as the messages; replay trusts the store up to here.
CREATE TABLE history_offsets (
    epoch         TEXT NOT NULL,
    log_partition INTEGER NOT NULL,
    next_position BIGINT NOT NULL,
    PRIMARY KEY (epoch, log_partition)
);
