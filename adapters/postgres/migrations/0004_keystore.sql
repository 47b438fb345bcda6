-- Crypto-shredding (docs/privacy.md): one AES-256 data key per data subject, stored wrapped under the
-- master key, which never reaches the database. Deliberately outside schema `ledger`: erasure must
-- really delete a row here, while the ledger keeps the ciphertext it hashed.
CREATE SCHEMA IF NOT EXISTS keystore;

CREATE TABLE keystore.data_keys (
    tenant_id   text  NOT NULL,
    subject_id  text  NOT NULL,
    kid         text  NOT NULL UNIQUE CHECK (kid ~ '^[0-9a-f]{32}$'),
    master_kid  text  NOT NULL,                                       -- which master key wrapped it
    wrapped     bytea NOT NULL CHECK (octet_length(wrapped) = 60),    -- nonce(12) || key(32) || tag(16)
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_id)
);

-- Read, create and destroy; never change in place (no UPDATE): a key exists until it is destroyed.
GRANT USAGE ON SCHEMA keystore TO nexus_app;
GRANT SELECT, INSERT, DELETE ON keystore.data_keys TO nexus_app;
