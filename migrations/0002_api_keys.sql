-- tollgate schema, version 2: API keys for the HTTP transport.
--
-- A key is handed out once as `tg_<id>_<secret>`. Only `id` (public: it
-- appears in receipts as `api_key:<id>` and in `tollgate keys list`) and a
-- hash of the secret are stored, so a copy of this database cannot be used
-- to call tools. Timestamps are RFC 3339 UTC with microseconds, like 0001.
CREATE TABLE api_keys (
    -- 12 lowercase hex characters, random; also the row's identity.
    id          TEXT NOT NULL PRIMARY KEY,
    -- The principal the key authenticates as (a name in principals.yaml).
    principal   TEXT NOT NULL,
    -- SHA-256 (hex) of the secret part of the token. The secret is 32 random
    -- bytes, so a fast hash is enough: there is nothing to brute-force.
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    -- NULL: never expires.
    expires_at  TEXT,
    -- Free text from `tollgate keys create --note`.
    note        TEXT,
    -- Set once by `tollgate keys revoke`; a revoked key is refused from the
    -- next request on. Rows are kept so receipts can still be traced.
    revoked_at  TEXT,
    -- Last successful use, written in batches (a few seconds late at most).
    last_used   TEXT
);

CREATE INDEX api_keys_principal ON api_keys (principal);
