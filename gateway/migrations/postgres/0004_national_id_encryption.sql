-- National ids encrypted at rest: the key id and the AES-256-GCM ciphertext
-- (gateway/src/crypto.rs), sealed to the participant's row. A PostgreSQL
-- database never held national ids in plain text (the SQLite step of this
-- number sets old plain text aside to be sealed), so the columns are simply
-- added; every write fills them.
ALTER TABLE participants ADD COLUMN national_id_key TEXT;
ALTER TABLE participants ADD COLUMN national_id_sealed BYTEA;

-- Which keys are in use: checked at every start, walked by rotate-key.
CREATE INDEX participants_by_national_id_key ON participants (national_id_key);
