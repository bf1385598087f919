-- Inbound sync: changes that Arena and NOKUT publish, kept as received in an
-- inbox with an ingest status, read from a persisted position.

-- Where each source's feed was read up to (exclusive of what comes after).
CREATE TABLE inbound_cursor (
    source      TEXT NOT NULL PRIMARY KEY,
    position    TEXT NOT NULL,
    update_time TEXT NOT NULL
);

-- Every change received, once per (source, position), whether from a feed
-- or a webhook. Positions are zero-padded to 20 digits so that text order is
-- feed order.
CREATE TABLE inbox (
    source            TEXT    NOT NULL,
    position          TEXT    NOT NULL,
    -- What it is, e.g. `SIAMO.TILTAKDELTAKER U` or `VEDTAK`.
    kind              TEXT    NOT NULL,
    -- The change as received (JSON), only what the gateway reads: no names,
    -- national ids or caseworker idents.
    body              TEXT    NOT NULL,
    -- new, handled, retry, failed or ignored
    status            TEXT    NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_time TEXT    NOT NULL,
    participant_id    TEXT,
    -- Why it was ignored or failed, or what handling it did. No personal data.
    note              TEXT,
    received_time     TEXT    NOT NULL,
    update_time       TEXT    NOT NULL,
    PRIMARY KEY (source, position)
);

CREATE INDEX inbox_due ON inbox (source, status, position);

-- The position of the latest change applied per entity (an Arena
-- participation, a NOKUT case), so that an older change re-ingested after a
-- newer one cannot roll the record back.
CREATE TABLE inbound_applied (
    source   TEXT NOT NULL,
    entity   TEXT NOT NULL,
    position TEXT NOT NULL,
    PRIMARY KEY (source, entity)
);

-- Other systems' identifiers for our participants: NOKUT case numbers and
-- Arena person numbers. Maintained by the write path and inbound handling.
CREATE TABLE external_refs (
    system         TEXT NOT NULL,
    reference      TEXT NOT NULL,
    participant_id TEXT NOT NULL REFERENCES participants (id),
    PRIMARY KEY (system, reference)
);

-- Arena's measure instances (SIAMO.TILTAKGJENNOMFORING) as the feed
-- published them: a participation names its instance, the instance names
-- the measure code and the employer.
CREATE TABLE arena_measure_instances (
    instance_id INTEGER NOT NULL PRIMARY KEY,
    code        TEXT    NOT NULL,
    employer_id INTEGER,
    position    TEXT    NOT NULL
);
