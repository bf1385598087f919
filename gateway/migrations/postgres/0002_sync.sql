-- Outbound synchronisation: for each target system and participant, the
-- version the target must reach and the version it has reached. Written in
-- the same transaction as the change itself, so no "send" can be lost: the
-- queue is this table.
CREATE TABLE sync_state (
    target            TEXT    NOT NULL,
    participant_id    TEXT    NOT NULL REFERENCES participants (id),
    desired_version   BIGINT  NOT NULL,
    delivered_version BIGINT  NOT NULL DEFAULT 0,
    -- pending, delivered or failed
    state             TEXT    NOT NULL,
    attempts          BIGINT  NOT NULL DEFAULT 0,
    next_attempt_time TEXT    NOT NULL,
    -- A claim: which gateway instance holds it, and until when. Only the
    -- owner of an unexpired claim may settle the row.
    lease_owner       TEXT,
    leased_until      TEXT,
    last_error        TEXT,
    update_time       TEXT    NOT NULL,
    PRIMARY KEY (target, participant_id)
);

CREATE INDEX sync_state_due ON sync_state (state, next_attempt_time);
