-- An import that fails before its file was read through (a missing file, a
-- FIFO, a bad header) is recorded too, without a content hash or size.
ALTER TABLE clue.imports ALTER COLUMN content_sha256 DROP NOT NULL;
ALTER TABLE clue.imports ALTER COLUMN file_bytes DROP NOT NULL;
ALTER TABLE clue.imports ADD CONSTRAINT imports_completed_have_content
    CHECK (status = 'failed' OR (content_sha256 IS NOT NULL AND file_bytes IS NOT NULL));
