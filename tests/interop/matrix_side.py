"""The Matrix side of the cross-protocol scripts: matrix-nio logins and waits."""

import argparse
import asyncio

from nio import AsyncClient, LoginResponse

from checks import check, eventually


async def matrix_login(hs, user):
    c = AsyncClient(hs, f"@{user}:localhost")
    r = await c.login("pw", device_name=f"{user}-nio")
    check(isinstance(r, LoginResponse), f"{user} logs in over Matrix")
    return c


async def events(client, room_id, limit=50):
    """The room's latest events (client format), oldest first."""
    r = await client.room_messages(room_id, start="", limit=limit)
    return [e.source for e in reversed(r.chunk)]


async def member_of(client, room_id, user):
    """The content of the user's member event in the room ({} if none)."""
    r = await client.room_get_state_event(room_id, "m.room.member", user)
    return getattr(r, "content", {}) or {}


async def matrix_event(client, room_id, pred, what):
    """Wait for an event of the room's latest that passes `pred`; it."""
    async def found():
        return [e for e in await events(client, room_id, 30) if pred(e)]
    return (await eventually(found, what))[0]


async def ephemeral(client, room_id, pred, what):
    """Sync until an ephemeral event of the room passes `pred`."""
    async def seen():
        room = (await client.sync(timeout=0)).rooms.join.get(room_id)
        return any(pred(ev) for ev in (room.ephemeral if room else []))
    await eventually(seen, what)


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
