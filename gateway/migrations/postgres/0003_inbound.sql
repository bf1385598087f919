-- Inbound sync: changes that Arena and NOKUT publish, kept as received in an
-- inbox with an ingest status, read from a persisted position.

-- Where each source's feed was read up to, and which gateway instance reads
-- it: one reader per feed, taken over when its lease runs out.
CREATE TABLE inbound_cursor (
    source       TEXT NOT NULL PRIMARY KEY,
    position     TEXT NOT NULL,
    reader       TEXT,
    reader_until TEXT,
    update_time  TEXT NOT NULL
);

-- Every change received, once per (source, position), whether from a feed
-- or a webhook on any instance. Positions are zero-padded to 20 digits so
-- that text order is feed order.
CREATE TABLE inbox (
    source            TEXT    NOT NULL,
    position          TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    -- The change as received (JSON), only what the gateway reads.
    body              TEXT    NOT NULL,
    -- new, handled, retry, failed or ignored
    status            TEXT    NOT NULL,
    attempts          BIGINT  NOT NULL DEFAULT 0,
    next_attempt_time TEXT    NOT NULL,
    participant_id    TEXT,
    -- Why it was ignored or failed, or what handling it did. No personal data.
    note              TEXT,
    received_time     TEXT    NOT NULL,
    update_time       TEXT    NOT NULL,
    PRIMARY KEY (source, position)
);

CREATE INDEX inbox_due ON inbox (source, status, position);

-- The position of the latest change applied per entity, so that an older
-- change re-ingested after a newer one cannot roll the record back.
CREATE TABLE inbound_applied (
    source   TEXT NOT NULL,
    entity   TEXT NOT NULL,
    position TEXT NOT NULL,
    PRIMARY KEY (source, entity)
);

-- Other systems' identifiers for our participants: NOKUT case numbers and
-- Arena person numbers.
CREATE TABLE external_refs (
    system         TEXT NOT NULL,
    reference      TEXT NOT NULL,
    participant_id TEXT NOT NULL REFERENCES participants (id),
    PRIMARY KEY (system, reference)
);

-- Arena's measure instances (SIAMO.TILTAKGJENNOMFORING) as the feed
-- published them.
CREATE TABLE arena_measure_instances (
    instance_id BIGINT  NOT NULL PRIMARY KEY,
    code        TEXT    NOT NULL,
    employer_id BIGINT,
    position    TEXT    NOT NULL
);
