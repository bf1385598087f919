-- The audit log: one entry per read or write of a person, per change that
-- Arena or NOKUT sent in, and per delivery attempt out.
--
-- Append-only. `hash` is an HMAC, with a key the database does not hold,
-- over `previous_hash`, the sequence and every other column, so an entry
-- that is edited, removed or moved breaks the chain at that entry
-- (`hurtigspor audit verify`). The triggers stop the gateway, and anyone
-- using it by mistake, from changing entries; someone who drops them still
-- cannot forge a chain that verifies.
CREATE TABLE audit_log (
    sequence       INTEGER PRIMARY KEY,
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
    previous_hash  BLOB    NOT NULL,
    hash           BLOB    NOT NULL
);

CREATE INDEX audit_by_participant ON audit_log (participant_id, sequence);
CREATE INDEX audit_by_organisation ON audit_log (organisation, sequence);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
