-- The application role may read and append, nothing else. UPDATE on append_lock is the privilege
-- PostgreSQL demands for SELECT ... FOR UPDATE; the trigger refuses any actual UPDATE there.
GRANT USAGE ON SCHEMA ledger TO nexus_app;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA ledger TO nexus_app;
GRANT UPDATE (ledger_id) ON ledger.append_lock TO nexus_app;
REVOKE UPDATE, DELETE, TRUNCATE ON ledger.events, ledger.merkle_nodes, ledger.heads, ledger.ledgers,
    ledger.signing_keys, ledger.checkpoints FROM nexus_app;
