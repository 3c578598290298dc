-- A redacted event's `unsigned.redacted_because` (spec: "Redactions"): the redaction event in
-- the client format, kept when the redaction is applied.
ALTER TABLE events ADD COLUMN redacted_because TEXT;
