"""Interop: one account's presence on both protocols (RFC 6121 presence <-> Matrix m.presence).

bob uses XMPP (slixmpp); alice uses Matrix (matrix-nio) and shares a room with him; carol uses
XMPP, then Matrix only, then XMPP again. Checks: bob's XMPP presence (available, away with a
status, gone) is his Matrix presence, in /presence and in alice's sync; carol's Matrix presence
reaches bob, her roster contact, from her bare JID (online, away, offline), and on a probe when
bob logs in again; her XMPP session coming back replaces it. Prints ALL OK on success.
"""

import asyncio

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXMLMask
from nio import RoomCreateResponse
from nio.api import RoomPreset

from checks import check, scram_client, until
from matrix_side import matrix_login, run_cross

MUC = "conference.localhost"


class Xmpp(scram_client(slixmpp.ClientXMPP)):
    def __init__(self, jid, password):
        super().__init__(jid, password, ("xep_0030", "xep_0045"))
        self.got = []
        self.register_handler(Callback("all-presence", MatchXMLMask("<presence xmlns='jabber:client'/>"), self.got.append))

    def seen(self, frm, ptype="available", show="", status=None):
        """Whether a presence from exactly `frm` (a bare or full JID) of that kind has come."""
        # slixmpp gives an available presence's <show/> as its type.
        want = (show or "available") if ptype == "available" else ptype
        return any(str(p["from"]) == frm and p["type"] == want and (status is None or p["status"] == status)
                   for p in self.got)


async def eventually(get, want, what, timeout=10):
    """Poll the coroutine function `get` until it returns `want`; a check."""
    got = None
    for _ in range(int(timeout / 0.05)):
        got = await get()
        if got == want:
            break
        await asyncio.sleep(0.05)
    check(got == want, f"{what} ({got})")


async def main(a):
    alice = await matrix_login(a.homeserver, "alice")
    r = await alice.room_create(alias="hall", preset=RoomPreset.public_chat)
    check(isinstance(r, RoomCreateResponse), "alice creates #hall")
    hall = r.room_id

    bob = Xmpp("bob@localhost/phone", "pw")
    await bob.login(a.port)
    await bob.plugin["xep_0045"].join_muc_wait(f"hall@{MUC}", "Bob", maxstanzas=0, timeout=20)

    async def matrix_presence(user="@bob:localhost", asking=alice):
        r = await asking.get_presence(user)
        return (getattr(r, "presence", None), getattr(r, "status_msg", None) or None)

    # XMPP -> Matrix.
    await eventually(matrix_presence, ("online", None), "bob's available XMPP session is online on Matrix")
    bob.send_presence(pshow="away", pstatus="lunch")
    await eventually(matrix_presence, ("unavailable", "lunch"), "away with a status is unavailable with that status_msg")
    seen = {}
    for _ in range(100):
        s = await alice.sync(timeout=0, full_state=not seen)
        for ev in s.presence_events:
            seen[ev.user_id] = (ev.presence, ev.status_msg)
        if seen.get("@bob:localhost") == ("unavailable", "lunch"):
            break
        await asyncio.sleep(0.05)
    check(seen.get("@bob:localhost") == ("unavailable", "lunch"), f"and alice's sync says so: {seen}")

    # carol and bob are roster contacts (slixmpp approves and subscribes back by default).
    carol = Xmpp("carol@localhost/laptop", "pw")
    await carol.login(a.port)
    bob.send_presence(pto="carol@localhost", ptype="subscribe")
    await until(lambda: bob.client_roster["carol@localhost"]["subscription"] == "both"
                and carol.client_roster["bob@localhost"]["subscription"] == "both", "bob and carol see each other's presence")
    await until(lambda: bob.seen("carol@localhost/laptop"), "bob sees carol's XMPP session")

    # carol leaves XMPP and comes on Matrix.
    carol.disconnect()
    await until(lambda: bob.seen("carol@localhost/laptop", "unavailable"), "bob sees carol's session go")
    carol_m = await matrix_login(a.homeserver, "carol")
    await carol_m.set_presence("online", "on matrix")
    await until(lambda: bob.seen("carol@localhost", status="on matrix"),
                "carol's Matrix presence reaches bob from her bare JID, with her status")
    await carol_m.set_presence("unavailable", "brb")
    await until(lambda: bob.seen("carol@localhost", show="away", status="brb"), "Matrix unavailable is away")
    await carol_m.set_presence("offline")
    await until(lambda: bob.seen("carol@localhost", "unavailable"), "Matrix offline is unavailable")
    await carol_m.set_presence("online", "back")

    # bob logs out: offline on Matrix; he logs in again and his probe finds carol's Matrix presence.
    bob.disconnect()
    await eventually(matrix_presence, ("offline", None), "bob's last XMPP session gone is offline on Matrix")
    bob = Xmpp("bob@localhost/tablet", "pw")
    await bob.login(a.port)
    await until(lambda: bob.seen("carol@localhost", status="back"), "bob's new session gets carol's Matrix presence on login")
    await eventually(matrix_presence, ("online", None), "and bob is online on Matrix again")

    # carol's XMPP session comes back: it replaces her Matrix presence.
    mark = len(bob.got)
    carol = Xmpp("carol@localhost/laptop", "pw")
    await carol.login(a.port)
    await until(lambda: any(str(p["from"]) == "carol@localhost" and p["type"] == "unavailable" for p in bob.got[mark:]),
                "carol's XMPP session coming back withdraws her bare-JID presence")
    await until(lambda: any(str(p["from"]) == "carol@localhost/laptop" and p["type"] == "available" for p in bob.got[mark:]),
                "and bob sees the session")
    await eventually(lambda: matrix_presence("@carol:localhost", carol_m), ("online", None),
                     "carol's Matrix presence is her XMPP session's now")

    for c in (bob, carol):
        c.disconnect()
    await alice.close()
    await carol_m.close()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    run_cross(main)
