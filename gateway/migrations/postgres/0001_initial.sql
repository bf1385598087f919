-- The canonical participant record, its change log and idempotency records.
-- The same steps as migrations/sqlite/, under the same version numbers; times
-- are kept as RFC 3339 text in UTC with microseconds (store/codec.rs), so
-- that text order is time order in both dialects.

-- One row per participant: the current version of the record, plus the
-- columns that lookups, filters and pages need.
CREATE TABLE participants (
    -- Registration order; the position that list pages continue from.
    position          BIGSERIAL PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    -- Keyed hash (HMAC-SHA256) of the national id: lookup and uniqueness.
    national_id_hash  BYTEA   NOT NULL UNIQUE,
    kommunenummer     TEXT    NOT NULL,
    hurtigspor_status INTEGER NOT NULL,
    version           BIGINT  NOT NULL,
    -- prost-encoded hurtigspor.v1.Participant without the national id.
    record            BYTEA   NOT NULL,
    create_time       TEXT    NOT NULL,
    update_time       TEXT    NOT NULL
);

CREATE INDEX participants_by_kommune ON participants (kommunenummer, position);
CREATE INDEX participants_by_status ON participants (hurtigspor_status, position);

-- Every accepted write. `sequence` is taken before commit, so sequences are
-- not in commit order: a reader keeps to what committed below the
-- visibility horizon, the oldest transaction still open (`xid`, compared
-- with pg_snapshot_xmin(pg_current_snapshot())), and never skips a change
-- that commits late.
CREATE TABLE change_log (
    sequence       BIGSERIAL PRIMARY KEY,
    xid            xid8    NOT NULL DEFAULT pg_current_xact_id(),
    participant_id TEXT    NOT NULL REFERENCES participants (id),
    version        BIGINT  NOT NULL,
    kind           TEXT    NOT NULL,
    origin         TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    commit_time    TEXT    NOT NULL,
    -- The record after the change, without the national id.
    snapshot       BYTEA   NOT NULL,
    UNIQUE (participant_id, version)
);

CREATE INDEX change_log_by_xid ON change_log (xid);

-- Client request ids, so that a retried request returns the original answer.
CREATE TABLE idempotency (
    method         TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    fingerprint    BYTEA   NOT NULL,
    participant_id TEXT    NOT NULL REFERENCES participants (id),
    version        BIGINT  NOT NULL,
    create_time    TEXT    NOT NULL,
    PRIMARY KEY (method, request_id)
);
