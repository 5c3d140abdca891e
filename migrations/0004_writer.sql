-- tollgate schema, version 4: a faster receipt writer, and who owns an intent.

-- Every appended receipt updated this index, for a filter (`receipts list
-- --decision`) that reads newest first by seq and can filter as it goes.
-- The principal, tool, ts and approval indexes stay: `receipts list
-- --principal/--tool`, `tollgate costs --since` and `receipts show` use them.
DROP INDEX IF EXISTS receipts_decision;

-- The receipt writer that recorded an intent (`writers.owner`). An intent is
-- turned into its `interrupted` receipt only once that writer is gone, so a
-- second tollgate process never "recovers" a call that is still running.
-- NULL: an intent written before version 4 (always recoverable).
ALTER TABLE intents ADD COLUMN owner TEXT;

-- One row per running receipt writer (one per tollgate process). The writer
-- refreshes its heartbeat every few seconds and deletes its row when it shuts
-- down; a row whose heartbeat is stale belongs to a process that died.
CREATE TABLE writers (
    -- Random id (UUIDv7) chosen when the writer starts.
    owner      TEXT    NOT NULL PRIMARY KEY,
    pid        INTEGER NOT NULL,
    started_at TEXT    NOT NULL,
    -- Unix time in milliseconds of the writer's last successful heartbeat.
    heartbeat  INTEGER NOT NULL
);
