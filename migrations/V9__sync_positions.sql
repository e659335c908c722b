-- Change data capture: the replication slot a source is streamed through,
-- and the position (commit LSN) up to which its changes are in the
-- analytical tables. Set in the transaction that writes what it covers;
-- NULL while the slot is made and its first copy has not committed.
CREATE TABLE clue.sync_positions (
    source      text        PRIMARY KEY,
    slot        text        NOT NULL,
    publication text        NOT NULL,
    lsn         pg_lsn,
    synced_at   timestamptz NOT NULL DEFAULT now()
);
