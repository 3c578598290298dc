"""Interop: matrix-nio (a real client library) against a running Estuary.

Run by tests/tests/interop_nio.rs with --homeserver URL. Exits non-zero (with a traceback)
on the first failed check; prints ALL OK at the end.
"""

import argparse
import asyncio
import sys

from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomSendResponse,
    ReceiptEvent,
    SyncResponse,
    TypingNoticeEvent,
)
from nio.api import MessageDirection, RoomPreset

from checks import check


async def register(hs, user, password):
    c = AsyncClient(hs, user)
    r = await c.register(user, password, device_name=f"{user}-nio")
    check(isinstance(r, RegisterResponse), f"register {user}: {r}")
    return c


def bodies(events):
    return [e.body for e in events if getattr(e, "body", None) is not None and e.source["type"] == "m.room.message"]


async def main(hs):
    alice = await register(hs, "alice", "alice-password")
    bob = await register(hs, "bob", "bob-password")

    # A second device logs in with the password.
    alice2 = AsyncClient(hs, "@alice:localhost")
    r = await alice2.login("alice-password", device_name="second")
    check(isinstance(r, LoginResponse) and r.device_id != alice.device_id, "login on a second device")
    bad = AsyncClient(hs, "@alice:localhost")
    r = await bad.login("wrong")
    check(not isinstance(r, LoginResponse), "a wrong password is refused")
    await bad.close()
    r = await alice.whoami()
    check(getattr(r, "user_id", None) == "@alice:localhost", f"whoami: {r}")
    await alice.set_displayname("Alice A.")
    r = await bob.get_displayname("@alice:localhost")
    check(getattr(r, "displayname", None) == "Alice A.", f"displayname: {r}")

    # Private rooms are encrypted by default.
    r = await alice.room_create(preset=RoomPreset.private_chat, name="private")
    check(isinstance(r, RoomCreateResponse), f"create private room: {r}")
    await alice.sync(timeout=0, full_state=True)
    check(alice.rooms[r.room_id].encrypted, "a private room is end-to-end encrypted by default")

    r = await alice.room_create(preset=RoomPreset.public_chat, name="Lobby", topic="hello")
    check(isinstance(r, RoomCreateResponse), f"create public room: {r}")
    room = r.room_id
    r = await alice.room_invite(room, "@bob:localhost")
    r = await bob.join(room)
    check(isinstance(r, JoinResponse), f"bob joins: {r}")
    r = await bob.sync(timeout=0, full_state=True)
    check(isinstance(r, SyncResponse) and room in bob.rooms, "bob sees the room")
    check(bob.rooms[room].name == "Lobby" and bob.rooms[room].topic == "hello", "room name and topic arrive as state")

    # 100 messages while bob long-polls: each exactly once, in order. When more than the
    # timeline limit arrive between two syncs (the machine is busy), the timeline is 'limited'
    # and bob fills the gap from prev_batch, as clients do.
    received = []
    seen_ids = set()
    gaps = []
    stop = asyncio.Event()

    async def fill_gap(prev_batch):
        missing = []
        token = prev_batch
        while token:
            page = await bob.room_messages(room, start=token, limit=50, direction=MessageDirection.back)
            check(isinstance(page, RoomMessagesResponse), f"gap pagination: {page}") if not isinstance(page, RoomMessagesResponse) else None
            reached = False
            for e in page.chunk:  # newest first
                if e.event_id in seen_ids:
                    reached = True
                    break
                seen_ids.add(e.event_id)
                if e.source["type"] == "m.room.message":
                    missing.append(e.body)
            if reached or not page.chunk:
                break
            token = page.end
        return list(reversed(missing))

    async def bob_syncs():
        while not stop.is_set():
            # A small timeline limit makes gaps (and their filling) part of the normal run.
            r = await bob.sync(timeout=3000, sync_filter={"room": {"timeline": {"limit": 5}}})
            check(isinstance(r, SyncResponse), "bob's sync succeeds") if not isinstance(r, SyncResponse) else None
            joined = r.rooms.join.get(room)
            if joined:
                if joined.timeline.limited:
                    gaps.append(joined.timeline.prev_batch)
                    received.extend(await fill_gap(joined.timeline.prev_batch))
                for e in joined.timeline.events:
                    seen_ids.add(e.event_id)
                received.extend(bodies(joined.timeline.events))
            if len(received) >= 100:
                stop.set()

    poller = asyncio.create_task(bob_syncs())
    sent_ids = []
    for i in range(100):
        r = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"msg {i}"})
        check(isinstance(r, RoomSendResponse), f"send {i}") if not isinstance(r, RoomSendResponse) else None
        sent_ids.append(r.event_id)
    await asyncio.wait_for(poller, timeout=120)
    check(received == [f"msg {i}" for i in range(100)], f"100 messages delivered once each and in order (got {len(received)}, {len(gaps)} gaps filled)")

    # A gap: bob is away for 30 messages, then syncs with a small timeline; the limited
    # timeline's prev_batch fills the gap through /messages.
    for i in range(30):
        await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"away {i}"})
    small = {"room": {"timeline": {"limit": 5}}}
    r = await bob.sync(timeout=0, sync_filter=small)
    tl = r.rooms.join[room].timeline
    check(tl.limited and len(tl.events) == 5, "a limited timeline after a gap")
    got = bodies(tl.events)
    token = tl.prev_batch
    while len(got) < 30:
        page = await bob.room_messages(room, start=token, limit=7, direction=MessageDirection.back)
        check(isinstance(page, RoomMessagesResponse), f"paginate back: {page}")
        older = [b for b in bodies(page.chunk) if b.startswith("away ")]
        got = list(reversed(older)) + got
        if not page.end or not page.chunk:
            break
        token = page.end
    check(got[-30:] == [f"away {i}" for i in range(30)], "backward pagination fills the gap in order")

    # Forward pagination from the start of the room reaches the same messages.
    forward = []
    token = "s0"
    while True:
        page = await bob.room_messages(room, start=token, limit=50, direction=MessageDirection.front)
        check(isinstance(page, RoomMessagesResponse), f"paginate forward: {page}")
        forward += bodies(page.chunk)
        if not page.end or not page.chunk:
            break
        token = page.end
    check(forward == [f"msg {i}" for i in range(100)] + [f"away {i}" for i in range(30)], "forward pagination sees all 130 messages in order")

    # Edits and reactions are relations, delivered as sent.
    target = sent_ids[0]
    await alice.room_send(room, "m.room.message", {
        "msgtype": "m.text", "body": "* msg 0 (edited)",
        "m.new_content": {"msgtype": "m.text", "body": "msg 0 (edited)"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    })
    await bob.room_send(room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "+1"}})
    r = await alice.sync(timeout=0)
    r = await bob.sync(timeout=0)
    rels = [e.source["content"].get("m.relates_to", {}) for e in r.rooms.join[room].timeline.events]
    check(any(x.get("rel_type") == "m.replace" and x.get("event_id") == target for x in rels), "an edit arrives with its m.replace relation")

    # State changes reach the other member.
    await alice.room_put_state(room, "m.room.topic", {"topic": "new topic"})
    await bob.sync(timeout=0)
    check(bob.rooms[room].topic == "new topic", "a topic change reaches bob")

    # Typing and read receipts reach the other member through sync's ephemeral events.
    await alice.sync(timeout=0)
    await bob.room_typing(room, typing_state=True, timeout=5000)
    r = await alice.sync(timeout=3000)
    typing = [e for e in r.rooms.join[room].ephemeral if isinstance(e, TypingNoticeEvent)]
    check(typing and "@bob:localhost" in typing[-1].users, "bob's typing notice reaches alice")
    await alice.room_read_markers(room, fully_read_event=sent_ids[-1], read_event=sent_ids[-1])
    r = await bob.sync(timeout=3000)
    receipts = [rc for e in r.rooms.join[room].ephemeral if isinstance(e, ReceiptEvent) for rc in e.receipts]
    check(any(rc.user_id == "@alice:localhost" and rc.event_id == sent_ids[-1] for rc in receipts), "alice's read receipt reaches bob")

    # Leaving.
    await bob.room_leave(room)
    r = await bob.sync(timeout=0)
    check(room in r.rooms.leave, "the room shows under leave after leaving")

    for c in (alice, alice2, bob):
        await c.close()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--homeserver", required=True)
    args = p.parse_args()
    asyncio.run(main(args.homeserver))
    sys.exit(0)
