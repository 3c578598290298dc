-- Rooms a user forgot (C-S /forget), with the membership event they forgot them at: a later
-- membership (a new invite or join) ends the forgetting.
CREATE TABLE forgotten_rooms (
    user_id      TEXT NOT NULL,
    room_id      TEXT NOT NULL,
    member_event TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
