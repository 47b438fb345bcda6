-- Single sign-on (docs/auth.md): the states of sign-ins that have come back from the identity provider.
-- The state itself travels in a signed, short-lived cookie; this table only makes each one usable once,
-- so a replayed callback (same cookie, same state) is refused. Rows past expires_at are dead weight
-- that an operator may prune; the application never deletes.
CREATE TABLE auth.spent_states (
    digest     text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
    spent_at   timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
GRANT SELECT, INSERT ON auth.spent_states TO nexus_app;
