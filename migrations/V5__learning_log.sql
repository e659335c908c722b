-- Prototype 003's learning log, as the built-in dataset `learning_log`
-- (models/learning_log.yaml) answers it. Partitioned by UTC month of
-- "timestamp"; months are added as records arrive, and a default partition
-- takes anything before that. The request_id of a record is unique through
-- clue's idempotency ledger (clue.idempotency, scope 'learning_log'): a
-- partitioned table's unique constraints must include the partition key.
-- A database that already has a learning_log table (the prototype's own) keeps it.
CREATE TABLE IF NOT EXISTS public.learning_log (
    request_id  uuid        NOT NULL,
    user_id     text        NOT NULL,
    word_count  integer     NOT NULL CHECK (word_count >= 0),
    "timestamp" timestamptz NOT NULL
) PARTITION BY RANGE ("timestamp");

DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'public.learning_log'::regclass) = 'p'
       AND to_regclass('public.learning_log_other') IS NULL THEN
        CREATE TABLE public.learning_log_other PARTITION OF public.learning_log DEFAULT;
        -- One user's records over a range, whatever the number of users.
        CREATE INDEX learning_log_user_time ON public.learning_log (user_id, "timestamp");
    END IF;
END
$$;
