-- clue's own bookkeeping: import jobs and the default validation log.
-- The `clue` schema itself is created before migrations run (it holds the
-- migration history table).

CREATE TABLE clue.imports (
    import_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name    text        NOT NULL,
    file_name     text        NOT NULL,
    content_sha256 text       NOT NULL,
    file_bytes    bigint      NOT NULL,
    schema_file   text,
    error_table   text,
    forced        boolean     NOT NULL DEFAULT false,
    status        text        NOT NULL CHECK (status IN ('completed', 'failed')),
    rows_loaded   bigint      NOT NULL DEFAULT 0,
    rows_rejected bigint      NOT NULL DEFAULT 0,
    error         text,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now()
);

-- A file may be loaded into a table once unless forced; the partial unique
-- index also makes two concurrent loads of the same file race safely: the
-- second one fails at commit instead of loading the rows twice.
CREATE UNIQUE INDEX imports_once ON clue.imports (table_name, content_sha256)
    WHERE status = 'completed' AND NOT forced;

-- Rows rejected by a validated import (prototype 000's `validation_logs`,
-- with the reason kept instead of a copy of the row as text only).
CREATE TABLE public.validation_logs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    import_id     bigint      NOT NULL,
    file_name     text        NOT NULL,
    line_number   bigint      NOT NULL,
    record_number bigint      NOT NULL,
    column_name   text,
    raw_value     text,
    rule          text        NOT NULL,
    reason        text        NOT NULL,
    raw_record    text        NOT NULL,
    logged_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX validation_logs_import ON public.validation_logs (import_id);
