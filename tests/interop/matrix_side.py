"""The Matrix side of the cross-protocol scripts: matrix-nio logins and waits."""

import argparse
import asyncio

from nio import AsyncClient, LoginResponse

from checks import check


async def matrix_login(hs, user):
    c = AsyncClient(hs, f"@{user}:localhost")
    r = await c.login("pw", device_name=f"{user}-nio")
    check(isinstance(r, LoginResponse), f"{user} logs in over Matrix")
    return c


async def events(client, room_id, limit=50):
    """The room's latest events (client format), oldest first."""
    r = await client.room_messages(room_id, start="", limit=limit)
    return [e.source for e in reversed(r.chunk)]


async def matrix_event(client, room_id, pred, what):
    """Wait for an event of the room's latest that passes `pred`; it."""
    for _ in range(100):
        found = [e for e in await events(client, room_id, 30) if pred(e)]
        if found:
            print(f"ok - {what}", flush=True)
            return found[0]
        await asyncio.sleep(0.05)
    check(False, what)


async def ephemeral(client, room_id, pred, what):
    """Sync until an ephemeral event of the room passes `pred`."""
    for _ in range(100):
        s = await client.sync(timeout=0)
        room = s.rooms.join.get(room_id)
        if any(pred(ev) for ev in (room.ephemeral if room else [])):
            print(f"ok - {what}", flush=True)
            return
        await asyncio.sleep(0.05)
    check(False, what)


def typing(user):
    return lambda ev: user in getattr(ev, "users", [])


def read_by(user, event_id):
    return lambda ev: any(r.user_id == user and r.event_id == event_id for r in getattr(ev, "receipts", []))


def run_cross(main):
    """Run a cross-protocol script's `main(args)` with --homeserver (Matrix) and --port (c2s)."""
    p = argparse.ArgumentParser()
    p.add_argument("--homeserver", required=True)
    p.add_argument("--port", type=int, required=True)
    asyncio.run(main(p.parse_args()))
