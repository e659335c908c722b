-- The one idempotency ledger (`store::ledger`): a key claimed in the
-- transaction of the rows it guards, with a fingerprint of the payload so a
-- replay (same key, same payload) can be told from a conflict (same key,
-- another payload). `scope` names what the key guards (a dataset, an
-- endpoint); an entry with an `expires_at` in the past counts as absent.
--
-- Uniqueness lives here, not in a UNIQUE constraint on a fact table: fact
-- tables are partitioned by month, and a partitioned table's unique
-- constraints must include the partition key, so a UNIQUE (order_id) there
-- could only say "once per month", not "once". One primary key on this
-- unpartitioned table says "once" and makes a concurrent duplicate wait for
-- the first claim's transaction to end.
CREATE TABLE clue.idempotency (
    scope       text        NOT NULL CHECK (scope <> ''),
    key         text        NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 200),
    fingerprint text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    PRIMARY KEY (scope, key)
);

-- Purging reads only the entries that can expire.
CREATE INDEX idempotency_expires ON clue.idempotency (expires_at)
    WHERE expires_at IS NOT NULL;
