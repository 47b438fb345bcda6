-- Where a background worker that follows the ledger resumes after a restart (application/inference_sweeper.py).
-- Bookkeeping, not history: outside schema `ledger`, and moved forward in place. A lost or stale row
-- costs a re-read, never a wrong answer: a saved position only says that nothing before it needs the
-- worker any more.
CREATE SCHEMA IF NOT EXISTS workers;

CREATE TABLE workers.resume_positions (
    worker    text   PRIMARY KEY,
    position  bigint NOT NULL CHECK (position >= 1),
    saved_at  timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE ON SCHEMA workers TO nexus_app;
GRANT SELECT, INSERT, UPDATE ON workers.resume_positions TO nexus_app;
