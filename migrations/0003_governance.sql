-- tollgate schema, version 3: governance (policies, approvals, idempotency,
-- budgets) and the evidence receipts carry about it.

-- Evidence columns. NULL in receipts written before this version; the hash
-- contract leaves these keys out when they are empty (src/receipt.rs).
ALTER TABLE receipts ADD COLUMN policy_set TEXT;
-- JSON array of the ids of the policies that decided the call.
ALTER TABLE receipts ADD COLUMN policies TEXT;
ALTER TABLE receipts ADD COLUMN approval_id TEXT;
ALTER TABLE receipts ADD COLUMN replay_of TEXT;

-- `tollgate receipts show` gathers an approval's whole story by this.
CREATE INDEX receipts_approval ON receipts (approval_id) WHERE approval_id IS NOT NULL;

-- Every distinct effective policy set (files plus the policies generated from
-- `allow:` lists), so a receipt's policy_set hash can always be looked up.
CREATE TABLE policy_sets (
    hash       TEXT NOT NULL PRIMARY KEY,
    -- JSON object: source name -> text ("(generated)" holds the allow lists).
    sources    TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    -- Last time a server started with this set.
    last_used  TEXT NOT NULL
);

-- Calls a policy sent to a human. A row is created pending and moves once to
-- approved, denied or expired; an approved row is then executed exactly once.
CREATE TABLE approvals (
    id            TEXT NOT NULL PRIMARY KEY,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    -- The receipt of the request (decision pending_approval).
    request_receipt TEXT NOT NULL,
    principal     TEXT NOT NULL,
    -- JSON array of the requester's roles at request time.
    roles         TEXT NOT NULL,
    auth          TEXT NOT NULL,
    tool          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    spec_hash     TEXT NOT NULL,
    -- Canonical JSON of the arguments as they will run (never shown masked:
    -- the run needs them), and the SHA-256 of that text to match repeats.
    args          TEXT NOT NULL,
    args_hash     TEXT NOT NULL,
    -- The role that must approve, and the policies that asked for it.
    approver_role TEXT NOT NULL,
    policies      TEXT NOT NULL,
    policy_set    TEXT NOT NULL,
    decided_by    TEXT,
    decided_at    TEXT,
    note          TEXT,
    -- Set when the approved call ran: its receipt and stored result.
    run_receipt   TEXT,
    result        TEXT
);
CREATE INDEX approvals_lookup ON approvals (principal, tool, args_hash, status);
CREATE INDEX approvals_status ON approvals (status, created_at);

-- Idempotency keys. `scope` is "tool:<name>" for spec-derived keys and
-- "principal:<name>|tool:<name>" for client keys; key_hash is the SHA-256 of
-- the key, so argument values used as keys are not stored in clear.
CREATE TABLE idempotency (
    scope       TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    args_hash   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('running', 'done')),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    -- The receipt of the run whose result is stored.
    receipt_id  TEXT,
    result      TEXT,
    PRIMARY KEY (scope, key_hash)
);

-- Running totals of budgets: one row per budget subject and period.
CREATE TABLE budget_usage (
    budget  TEXT NOT NULL,
    -- The principal or role the total belongs to.
    subject TEXT NOT NULL,
    -- "2026-11-22" (day) or "2026-11" (month), UTC.
    period  TEXT NOT NULL,
    calls   INTEGER NOT NULL DEFAULT 0,
    usd     REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, subject, period)
);

-- Intents: a call to a tool that is not read-only is written here (committed)
-- before the tool runs, and removed in the same transaction that appends its
-- receipt. A row left behind means the process died in between; start-up
-- turns it into a receipt with outcome `interrupted`.
CREATE TABLE intents (
    -- The id the receipt will have.
    id         TEXT NOT NULL PRIMARY KEY,
    created_at TEXT NOT NULL,
    -- JSON of the receipt to append if the call never completes.
    receipt    TEXT NOT NULL
);
