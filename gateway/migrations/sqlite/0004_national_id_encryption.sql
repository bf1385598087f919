-- National ids encrypted at rest. A participant's national id is kept only
-- as AES-256-GCM ciphertext (gateway/src/crypto.rs), with the id of the key
-- it was encrypted under beside it:
--
--   national_id_key     the key id, as named in security.encryption_keys
--   national_id_sealed  0x01 || 12-byte random nonce || ciphertext || 16-byte
--                       tag; the participant id and the key id are its
--                       associated data, so it decrypts in its own row only
--
-- Lookups and uniqueness stay on national_id_hash (a keyed hash).
--
-- SQL has no keys, so this migration only sets existing plaintext aside in
-- national_id_plaintext. When the gateway opens the database it encrypts
-- those rows and empties the table in one transaction, rewrites the file
-- (VACUUM) and truncates the WAL, so that no plaintext is left in free pages
-- or the WAL, and only then drops the table. Every row has both columns once
-- the gateway has opened the database; a leftover national_id_plaintext
-- means that work is not finished and is taken up at the next open.

ALTER TABLE participants ADD COLUMN national_id_key TEXT;
ALTER TABLE participants ADD COLUMN national_id_sealed BLOB;

CREATE TABLE national_id_plaintext (
    participant_id TEXT NOT NULL PRIMARY KEY,
    national_id    TEXT NOT NULL
);
INSERT INTO national_id_plaintext (participant_id, national_id) SELECT id, national_id FROM participants;

ALTER TABLE participants DROP COLUMN national_id;

-- Which keys are in use: checked at every start, walked by rotate-key.
CREATE INDEX participants_by_national_id_key ON participants (national_id_key);
