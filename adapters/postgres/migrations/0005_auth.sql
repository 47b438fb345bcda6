-- Sign-in secrets (docs/auth.md). Deliberately outside schema `ledger`: the ledger is exported in audit
-- bundles, and a password hash or a refresh token hash there would hand auditors a guessing target.
-- The ledger records that a password changed (UserPasswordChanged), never the hash.
CREATE SCHEMA IF NOT EXISTS auth;

-- One argon2id hash per user; replaced in place when the password changes.
CREATE TABLE auth.credentials (
    user_id       text PRIMARY KEY,
    tenant_id     text NOT NULL,
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Rotating refresh tokens: the SHA-256 of an opaque 256-bit token. A token is used once (used_at);
-- presenting a used or revoked one revokes its whole family (every token descended from one sign-in).
CREATE TABLE auth.refresh_tokens (
    token_sha256 text PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    family_id    uuid NOT NULL,
    user_id      text NOT NULL,
    tenant_id    text NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX refresh_tokens_family ON auth.refresh_tokens (family_id);

-- The application reads, creates and updates (password change, use, revocation); it never deletes,
-- so a revoked family stays visible until an operator prunes expired rows.
GRANT USAGE ON SCHEMA auth TO nexus_app;
GRANT SELECT, INSERT ON auth.credentials, auth.refresh_tokens TO nexus_app;
GRANT UPDATE (password_hash, updated_at) ON auth.credentials TO nexus_app;
GRANT UPDATE (used_at, revoked_at) ON auth.refresh_tokens TO nexus_app;
