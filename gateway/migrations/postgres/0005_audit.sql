-- The audit log: one entry per read or write of a person, per change that
-- Arena or NOKUT sent in, and per delivery attempt out.
--
-- Several instances append at once, so an entry is appended unchained (its
-- arrival `id` and `xid`), and a chainer gives it its `sequence` and hashes
-- once every transaction that could commit an entry before it has ended
-- (below the visibility horizon): no audited read waits for a cluster-wide
-- lock on the chain's head. `hash` is an HMAC, with a key the database does
-- not hold, over `previous_hash`, the sequence and every entry column, so an
-- entry edited, removed or moved after chaining breaks the chain at that
-- entry (`hurtigspor audit verify`).
CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    xid            xid8    NOT NULL DEFAULT pg_current_xact_id(),
    sequence       BIGINT  UNIQUE,
    time           TEXT    NOT NULL,
    -- 0192:<orgnr> of the caller, or the system: arena, nokut, gateway.
    organisation   TEXT    NOT NULL,
    vendor         TEXT,
    method         TEXT    NOT NULL,
    -- The opaque participant id; never a national id or a name.
    participant_id TEXT,
    purpose        TEXT,
    outcome        TEXT    NOT NULL,
    detail         TEXT,
    previous_hash  BYTEA,
    hash           BYTEA,
    CHECK ((sequence IS NULL) = (hash IS NULL) AND (hash IS NULL) = (previous_hash IS NULL))
);

CREATE INDEX audit_unchained ON audit_log (id) WHERE sequence IS NULL;
CREATE INDEX audit_by_participant ON audit_log (participant_id, sequence);
CREATE INDEX audit_by_organisation ON audit_log (organisation, sequence);

-- Append-only: no entry is deleted, and an entry changes once, when it is
-- chained (its chain columns set, nothing else touched).
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.sequence IS NOT NULL
       OR (NEW.id, NEW.xid, NEW.time, NEW.organisation, NEW.vendor, NEW.method, NEW.participant_id, NEW.purpose,
           NEW.outcome, NEW.detail)
          IS DISTINCT FROM
          (OLD.id, OLD.xid, OLD.time, OLD.organisation, OLD.vendor, OLD.method, OLD.participant_id, OLD.purpose,
           OLD.outcome, OLD.detail)
    THEN
        RAISE EXCEPTION 'the audit log is append-only';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Nor is the log emptied at once.
CREATE FUNCTION audit_log_not_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;

CREATE TRIGGER audit_log_not_truncated BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_not_truncated();
