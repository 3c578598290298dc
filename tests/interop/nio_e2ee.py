"""Interop: matrix-nio with end-to-end encryption (vodozemac bindings) against a running
Estuary, talking to the Rust vodozemac test client of tests/tests/interop_nio_e2ee.rs.

As bob: log in, upload keys, join the encrypted room alice invited us to, send an encrypted
message (nio shares its Megolm key with alice's device over Olm), then wait for alice's
encrypted reply and decrypt it. Prints ALL OK on success; exits non-zero otherwise.
"""

import argparse
import asyncio
import sys
import time

from nio import AsyncClient, AsyncClientConfig, LoginResponse, MegolmEvent, RoomMessageText, RoomSendResponse

from checks import check


async def main(hs, room_id, store, expect):
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    bob = AsyncClient(hs, "@bob:localhost", store_path=store, config=config)
    r = await bob.login("bob-password", device_name="nio-e2e")
    check(isinstance(r, LoginResponse), f"bob logs in: {r}")
    if bob.should_upload_keys:
        await bob.keys_upload()
    check(True, "bob's device keys and one-time keys are uploaded")

    deadline = time.monotonic() + 90
    joined = False
    while time.monotonic() < deadline:
        await bob.sync(timeout=2000, full_state=not joined)
        if room_id in bob.invited_rooms and not joined:
            await bob.join(room_id)
        if room_id in bob.rooms and "@alice:localhost" in bob.rooms[room_id].users:
            joined = True
            break
    check(joined, "bob joined alice's room")
    check(bob.rooms[room_id].encrypted, "the room is encrypted")
    if bob.should_query_keys:
        await bob.keys_query()

    r = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello from nio"}, ignore_unverified_devices=True)
    check(isinstance(r, RoomSendResponse), f"bob sends an encrypted message: {r}")

    got = None
    while time.monotonic() < deadline and got is None:
        r = await bob.sync(timeout=2000)
        if bob.should_query_keys:
            await bob.keys_query()
        joined_room = r.rooms.join.get(room_id) if hasattr(r, "rooms") else None
        for event in joined_room.timeline.events if joined_room else []:
            if isinstance(event, RoomMessageText) and event.sender == "@alice:localhost":
                got = event.body
            elif isinstance(event, MegolmEvent) and event.sender == "@alice:localhost":
                # The room key may arrive after the event in the same sync; try again.
                decrypted = bob.decrypt_event(event)
                if isinstance(decrypted, RoomMessageText):
                    got = decrypted.body
    check(got == expect, f"bob decrypts alice's message: {got!r}")
    await bob.close()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--homeserver", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--expect", required=True)
    a = p.parse_args()
    asyncio.run(main(a.homeserver, a.room, a.store, a.expect))
    sys.exit(0)
