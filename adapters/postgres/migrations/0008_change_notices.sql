-- Change notices (docs/architecture.md, "Change notices"): every API process keeps some state in memory
-- (verified API keys, routing tables, data keys, content switches), which another process, or the CLI,
-- can change. The commit that changes it announces it on channel `nexus_changes`, and each API process,
-- listening, drops its copy at once instead of when the copy expires. A notice only says what to read
-- again, never what it now holds: the ledger and the keystore stay the only truth.
--
-- On the ledger only the streams such state is read from are announced: a trigger's WHEN clause is
-- evaluated without calling the function, so an inference's rows cost a comparison, not a notice.

CREATE FUNCTION ledger.announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nexus_changes',
                      json_build_object('stream', NEW.stream_id, 'tenant', NEW.tenant_id, 'type', NEW.type)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER announce_cached_state AFTER INSERT ON ledger.events FOR EACH ROW
    WHEN (NEW.stream_id LIKE 'apikey-%' OR NEW.stream_id LIKE 'tenant-%' OR NEW.stream_id LIKE 'deployments-%')
    EXECUTE FUNCTION ledger.announce_change();

-- A data key destroyed (an erasure): processes that sealed with it must stop at once.
CREATE FUNCTION keystore.announce_destroyed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nexus_changes',
                      json_build_object('data_key', json_build_array(OLD.tenant_id, OLD.subject_id))::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER announce_destroyed AFTER DELETE ON keystore.data_keys FOR EACH ROW
    EXECUTE FUNCTION keystore.announce_destroyed();
