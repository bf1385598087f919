-- The canonical participant record, its change log and idempotency records.

-- One row per participant: the current version of the record, plus the
-- columns that lookups, filters and pages need.
CREATE TABLE participants (
    -- Registration order; the position that list pages continue from.
    position          INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    -- Keyed hash (HMAC-SHA256) of the national id: lookup and uniqueness.
    national_id_hash  BLOB    NOT NULL UNIQUE,
    national_id       TEXT    NOT NULL,
    kommunenummer     TEXT    NOT NULL,
    hurtigspor_status INTEGER NOT NULL,
    version           INTEGER NOT NULL,
    -- prost-encoded hurtigspor.v1.Participant without the national id.
    record            BLOB    NOT NULL,
    create_time       TEXT    NOT NULL,
    update_time       TEXT    NOT NULL
);

CREATE INDEX participants_by_kommune ON participants (kommunenummer, position);
CREATE INDEX participants_by_status ON participants (hurtigspor_status, position);

-- Every accepted write, in commit order: the source of change streams,
-- synchronisation and reporting history.
CREATE TABLE change_log (
    sequence       INTEGER PRIMARY KEY AUTOINCREMENT,
    participant_id TEXT    NOT NULL REFERENCES participants (id),
    version        INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    origin         TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    commit_time    TEXT    NOT NULL,
    -- The record after the change, without the national id.
    snapshot       BLOB    NOT NULL,
    UNIQUE (participant_id, version)
);

-- Client request ids, so that a retried request returns the original answer.
CREATE TABLE idempotency (
    method         TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    fingerprint    BLOB    NOT NULL,
    participant_id TEXT    NOT NULL REFERENCES participants (id),
    version        INTEGER NOT NULL,
    create_time    TEXT    NOT NULL,
    PRIMARY KEY (method, request_id)
);
