-- XMPP offline messages (RFC 6121 §8.5.2.2.1, XEP-0160): stanzas, with their XEP-0203 delay,
-- for an account that had no session. Deleted once handed to a session.
CREATE TABLE xmpp_offline (
    id        INTEGER PRIMARY KEY,
    localpart TEXT NOT NULL,
    stanza    TEXT NOT NULL
) STRICT;
CREATE INDEX xmpp_offline_by_account ON xmpp_offline (localpart, id);
