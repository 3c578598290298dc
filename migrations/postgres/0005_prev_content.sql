-- For state events: the state event this one replaced and its content, shown to clients in
-- unsigned.replaces_state / unsigned.prev_content (how clients render "changed their name").
ALTER TABLE events ADD COLUMN replaces_state TEXT;
ALTER TABLE events ADD COLUMN prev_content TEXT;
