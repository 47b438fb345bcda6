-- The hash-chained ledger. Every table in schema `ledger` is append-only: the trigger below refuses
-- UPDATE, DELETE and TRUNCATE for every role, and the application role is granted INSERT and SELECT.

CREATE SCHEMA IF NOT EXISTS ledger;

CREATE TABLE ledger.ledgers (
    ledger_id   uuid PRIMARY KEY,
    hash_alg    text NOT NULL CHECK (hash_alg IN ('blake3', 'sha256')),
    format      int  NOT NULL,
    created_at  text NOT NULL,          -- exactly as hashed into the genesis record
    genesis     bytea NOT NULL,         -- canonical genesis bytes
    chain_seed  bytea NOT NULL          -- H(0x02 || genesis)
);

-- The writers' mutex: one row per ledger, locked FOR UPDATE by every append transaction and never
-- modified. It holds no facts, so it is not a ledger table; the trigger still refuses changes.
CREATE TABLE ledger.append_lock (
    ledger_id uuid PRIMARY KEY REFERENCES ledger.ledgers
);

CREATE TABLE ledger.events (
    position        bigint PRIMARY KEY CHECK (position >= 1),
    event_id        uuid   NOT NULL UNIQUE,
    tenant_id       text   NOT NULL,
    stream_id       text   NOT NULL,
    stream_version  bigint NOT NULL CHECK (stream_version >= 1),
    type            text   NOT NULL,
    schema_version  int    NOT NULL,
    payload         json   NOT NULL,    -- json, not jsonb: the canonical bytes are kept verbatim
    metadata        json   NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea  NOT NULL,
    entry_hash      bytea  NOT NULL,
    chain_hash      bytea  NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_tenant_position ON ledger.events (tenant_id, position);
CREATE INDEX events_recorded_at ON ledger.events (recorded_at);

-- Hashes of complete, aligned Merkle subtrees of 16 leaves or more (level >= 4). Smaller subtrees
-- are recomputed from at most 15 entry hashes, which keeps this table an eighth of the events table.
CREATE TABLE ledger.merkle_nodes (
    level  smallint NOT NULL,
    idx    bigint   NOT NULL,
    hash   bytea    NOT NULL,
    PRIMARY KEY (level, idx)
);

-- One tree head per committed append transaction: size, root, chain head and the compact range
-- (the roots of the perfect subtrees, largest first) that the next append continues from.
CREATE TABLE ledger.heads (
    size         bigint PRIMARY KEY,
    root         bytea  NOT NULL,
    chain_head   bytea  NOT NULL,
    frontier     bytea  NOT NULL,
    committed_at timestamptz NOT NULL
);

CREATE TABLE ledger.signing_keys (
    key_id      text PRIMARY KEY,
    algorithm   text NOT NULL CHECK (algorithm = 'ed25519'),
    public_key  bytea NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE ledger.checkpoints (
    tree_size   bigint NOT NULL,
    key_id      text   NOT NULL REFERENCES ledger.signing_keys,
    root        bytea  NOT NULL,
    chain_head  bytea  NOT NULL,
    hash_alg    text   NOT NULL,
    ledger_id   uuid   NOT NULL,
    signed_at   text   NOT NULL,
    signature   bytea  NOT NULL,
    PRIMARY KEY (tree_size, key_id)
);

CREATE FUNCTION ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger is append-only: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ledgers', 'append_lock', 'events', 'merkle_nodes', 'heads', 'signing_keys', 'checkpoints'] LOOP
        EXECUTE format('CREATE TRIGGER refuse_update_delete BEFORE UPDATE OR DELETE ON ledger.%I
                        FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change()', t);
        EXECUTE format('CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON ledger.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change()', t);
    END LOOP;
END;
$$;
