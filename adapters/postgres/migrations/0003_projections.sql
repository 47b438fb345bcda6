-- Projections: read models built from the ledger, one schema per read-model version (rm_<name>_<n>),
-- created and dropped by the application role at run time, so nexus_app may create schemas here.
-- Schema `projections` holds what outlives any one version: which version serves reads (registry),
-- the record of failures (errors), and the histogram arithmetic the read models share.

-- Database-level grants are per database (CREATE DATABASE ... TEMPLATE does not copy them), hence
-- current_database() rather than a name.
DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON DATABASE %I TO nexus_app', current_database());
END;
$$;

CREATE SCHEMA IF NOT EXISTS projections;
GRANT USAGE ON SCHEMA projections TO nexus_app;

-- One row per deployed projection. Live appliers lock it FOR NO KEY UPDATE, readers FOR KEY SHARE,
-- and a rebuild's swap FOR UPDATE: appliers and the swap serialise, and a reader holding the row keeps
-- the version it read from being dropped under it, while readers never block appliers.
CREATE TABLE projections.registry (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,40}$'),
    active_schema   text NOT NULL,
    version         int  NOT NULL,          -- the projection code's version that built active_schema
    swapped_at      timestamptz NOT NULL DEFAULT now(),
    stopped         boolean NOT NULL DEFAULT false,
    last_error      text,
    last_error_at   timestamptz,
    last_error_position bigint
);

-- Every failure, kept after a resume or rebuild clears the registry's last_error.
CREATE TABLE projections.errors (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    schema_name text NOT NULL,
    position    bigint,
    event_id    uuid,
    event_type  text,
    error       text NOT NULL,
    detail      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX errors_name_at ON projections.errors (name, at DESC);

-- Numbers read-model versions (rm_usage_7); one sequence for all keeps names unique across rebuilds.
CREATE SEQUENCE projections.schema_generation;

GRANT SELECT, INSERT, UPDATE ON projections.registry TO nexus_app;
GRANT SELECT, INSERT ON projections.errors TO nexus_app;
GRANT USAGE ON SEQUENCE projections.errors_id_seq, projections.schema_generation TO nexus_app;

-- Latency histograms are bigint[] of per-bucket counts (bucket boundaries live in
-- projections/histogram.py). Merging two histograms is adding them element-wise; arrays are stored
-- without trailing zeros, so the shorter one counts as padded with zeros.
-- plpgsql: an index loop measured faster here than unnest/array_agg (no sort, no set-returning call).
CREATE FUNCTION projections.hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n int := coalesce(greatest(cardinality(a), cardinality(b)), 0);
    r bigint[] := array_fill(0::bigint, ARRAY[n]);
BEGIN
    FOR i IN 1..n LOOP
        r[i] := coalesce(a[i], 0) + coalesce(b[i], 0);
    END LOOP;
    RETURN r;
END;
$$;

CREATE AGGREGATE projections.hist_sum(bigint[]) (
    SFUNC = projections.hist_add,
    STYPE = bigint[],
    INITCOND = '{}',
    PARALLEL = SAFE
);
