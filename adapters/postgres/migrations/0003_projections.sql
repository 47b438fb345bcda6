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

-- Latency histograms (projections/histogram.py) are bigint[] in a sparse, canonical form: '{}' when
-- empty, else {first occupied bucket, its count, ..., count of the last occupied bucket}. Merging two
-- is adding them bucket by bucket. plpgsql: an index loop measured faster here than unnest/array_agg.
CREATE FUNCTION projections.hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    a_first int;
    b_first int;
    lo int;
    r bigint[];
BEGIN
    IF a IS NULL OR cardinality(a) = 0 THEN
        RETURN coalesce(b, '{}');
    END IF;
    IF b IS NULL OR cardinality(b) = 0 THEN
        RETURN a;
    END IF;
    a_first := a[1];
    b_first := b[1];
    lo := least(a_first, b_first);
    -- r[1] is the first bucket; the count of bucket k sits at r[k - lo + 2].
    r := array_fill(0::bigint, ARRAY[greatest(a_first + cardinality(a), b_first + cardinality(b)) - lo]);
    r[1] := lo;
    FOR i IN 2..cardinality(a) LOOP
        r[a_first - lo + i] := r[a_first - lo + i] + a[i];
    END LOOP;
    FOR i IN 2..cardinality(b) LOOP
        r[b_first - lo + i] := r[b_first - lo + i] + b[i];
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
