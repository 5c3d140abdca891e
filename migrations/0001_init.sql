-- tollgate schema, version 1.
--
-- Timestamps are RFC 3339 UTC strings with microseconds
-- (e.g. 2026-11-21T22:56:13.123456Z); their fixed width makes them sort as text.

-- Every distinct content a tool's spec file has ever had. A version is never
-- changed or removed, so an old receipt can always be matched with the exact
-- spec that served it, and `tollgate tools rollback` has something to go back to.
CREATE TABLE tool_versions (
    tool        TEXT    NOT NULL,
    -- 1, 2, 3, ... per tool, in order of first appearance.
    version     INTEGER NOT NULL,
    -- SHA-256 (hex) of `canonical`; receipts record it as spec_hash.
    hash        TEXT    NOT NULL,
    -- Canonical JSON of the parsed spec: what the hash covers.
    canonical   TEXT    NOT NULL,
    -- Where the spec file was when this version was first seen.
    source_path TEXT    NOT NULL,
    -- The file as first seen, comments and all, for humans and diffs.
    source_text TEXT    NOT NULL,
    first_seen  TEXT    NOT NULL,
    PRIMARY KEY (tool, version),
    -- Reverting a file to an earlier content reuses that earlier version.
    UNIQUE (tool, hash)
);

-- One row per tool ever seen: which version is served, and why.
CREATE TABLE tools (
    name           TEXT    NOT NULL PRIMARY KEY,
    -- The version that is served; NULL means the tool is not served.
    active_version INTEGER,
    -- The version the spec file currently has; NULL if the file is gone.
    file_version   INTEGER,
    -- 1 after a rollback: active_version stays put when the file changes,
    -- until `tollgate tools unpin`.
    pinned         INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    updated_at     TEXT    NOT NULL,
    FOREIGN KEY (name, active_version) REFERENCES tool_versions (tool, version),
    FOREIGN KEY (name, file_version) REFERENCES tool_versions (tool, version)
);

-- One row per governed call, hash-chained (see src/receipt.rs for the exact
-- formula). Append-only: the triggers below stop the server, or anyone using
-- SQL casually, from changing history; `tollgate receipts verify` catches
-- anyone who drops the triggers first.
CREATE TABLE receipts (
    -- Chain position. AUTOINCREMENT so a number is never reused.
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- UUIDv7 assigned when the call started.
    id             TEXT    NOT NULL UNIQUE,
    ts             TEXT    NOT NULL,
    principal      TEXT,
    -- JSON array of role names, canonical form.
    roles          TEXT    NOT NULL,
    auth           TEXT    NOT NULL,
    transport      TEXT    NOT NULL,
    session        TEXT,
    -- As requested: an unknown tool's name is recorded too, so no foreign key.
    tool           TEXT    NOT NULL,
    version        INTEGER,
    spec_hash      TEXT,
    -- Call arguments, canonical JSON (exactly the text that was hashed).
    args           TEXT    NOT NULL,
    decision       TEXT    NOT NULL,
    reason         TEXT,
    outcome        TEXT    NOT NULL,
    result_digest  TEXT,
    result_excerpt TEXT,
    duration_us    INTEGER NOT NULL,
    cost_usd       REAL,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL
);

-- The filters of `tollgate receipts list`, each newest first.
CREATE INDEX receipts_principal ON receipts (principal, seq);
CREATE INDEX receipts_tool ON receipts (tool, seq);
CREATE INDEX receipts_decision ON receipts (decision, seq);
CREATE INDEX receipts_ts ON receipts (ts);

CREATE TRIGGER receipts_no_update BEFORE UPDATE ON receipts
BEGIN
    SELECT RAISE(ABORT, 'receipts are append-only');
END;

CREATE TRIGGER receipts_no_delete BEFORE DELETE ON receipts
BEGIN
    SELECT RAISE(ABORT, 'receipts are append-only');
END;
