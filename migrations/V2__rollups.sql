-- The rollups clue maintains, with the definition each was built from: a
-- rollup whose recorded definition differs from the dataset's is rebuilt
-- before use.
CREATE TABLE clue.rollups (
    name       text PRIMARY KEY,
    dataset    text        NOT NULL,
    definition text        NOT NULL,
    built_at   timestamptz NOT NULL DEFAULT now()
);
CREATE SCHEMA IF NOT EXISTS clue_rollup;
