"""Interop: slixmpp roster, presence subscriptions and presence broadcast against Estuary.

alice asks bob for a subscription; bob's client (slixmpp's auto-authorize and auto-subscribe,
as real clients do) approves and asks back, so both end at 'both'. Presence then flows both
ways (available, a status change, unavailable on disconnect); a roster removal cancels the
subscriptions; a subscription to another server is refused with an error, not dropped. Client
State Indication (XEP-0352) holds presence for an inactive session, not messages.
Prints ALL OK on success.
"""

import asyncio
import sys

import slixmpp

from checks import check, server_args, starttls_to_test_server, until


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        starttls_to_test_server(self)
        self.auto_authorize = True
        self.auto_subscribe = True
        self.started = asyncio.get_event_loop().create_future()
        self.presences = []
        self.errors = []
        self.messages = []
        self.register_plugin("xep_0352")
        self.add_event_handler("message", lambda m: self.messages.append(m))
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("presence", lambda p: self.presences.append(p))
        self.add_event_handler("presence_error", lambda p: self.errors.append(p))

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.started.set_result(True)

    async def login(self, host, port):
        self.connect(host, port)
        await asyncio.wait_for(self.started, 20)

    def sub(self, jid):
        return self.client_roster[jid]["subscription"] if jid in self.client_roster else None

    def saw(self, sender_bare, ptype=None, show=None):
        return any(p["from"].bare == sender_bare and (ptype is None or p["type"] == ptype) and (show is None or p["show"] == show) for p in self.presences)


async def main(a):
    d = a.domain
    alice, bob = Client(f"alice@{d}/a", "alice-password"), Client(f"bob@{d}/b", "bob-password")
    await alice.login(a.host, a.port)
    await bob.login(a.host, a.port)

    alice.send_presence_subscription(pto=f"bob@{d}")
    await until(lambda: alice.sub(f"bob@{d}") == "both" and bob.sub(f"alice@{d}") == "both", "subscription handshake ends at 'both' on both rosters")
    await until(lambda: alice.saw(f"bob@{d}", "available") and bob.saw(f"alice@{d}", "available"), "each sees the other available")

    bob.send_presence(pshow="dnd", pstatus="in a meeting")
    await until(lambda: alice.saw(f"bob@{d}", show="dnd"), "a status change reaches alice")

    # A second session of alice's gets the roster from the server, with versioning.
    alice2 = Client(f"alice@{d}/second", "alice-password")
    await alice2.login(a.host, a.port)
    check(alice2.sub(f"bob@{d}") == "both", "the roster is stored: a new session reads 'both'")
    await until(lambda: alice2.saw(f"bob@{d}", show="dnd"), "a new session is told bob's current presence (probe)")

    # XEP-0352: while alice's second session is inactive, presence updates wait (only the
    # latest per contact); messages do not.
    check(alice2.plugin["xep_0352"].enabled, "the server offers CSI")
    alice2.plugin["xep_0352"].send_inactive()
    await asyncio.sleep(0.3)
    n = len(alice2.presences)
    bob.send_presence(pshow="away", pstatus="one")
    bob.send_presence(pshow="xa", pstatus="two")
    await until(lambda: alice.saw(f"bob@{d}", show="xa"), "an active session gets bob's updates at once")
    await asyncio.sleep(0.3)
    check(len(alice2.presences) == n, "the inactive session is not woken for presence")
    bob.send_message(mto=f"alice@{d}/second", mbody="wake up", mtype="chat")
    await until(lambda: any(m["body"] == "wake up" for m in alice2.messages), "a message reaches the inactive session at once")
    alice2.plugin["xep_0352"].send_active()
    await until(lambda: len(alice2.presences) > n, "on <active/>, the held presence arrives")
    await asyncio.sleep(0.3)
    new = alice2.presences[n:]
    check(len(new) == 1 and new[0]["show"] == "xa", f"only bob's latest presence, once: {[p['show'] for p in new]}")

    bob.disconnect()
    await until(lambda: alice.saw(f"bob@{d}", "unavailable"), "bob's disconnect shows as unavailable")

    alice.del_roster_item(f"bob@{d}")
    await until(lambda: f"bob@{d}" not in alice.client_roster or alice.sub(f"bob@{d}") in (None, "remove"), "alice removes bob from her roster")
    await until(lambda: f"bob@{d}" not in alice2.client_roster or alice2.sub(f"bob@{d}") in (None, "remove"), "the removal is pushed to alice's other session")

    alice.send_presence_subscription(pto="carol@elsewhere.example")
    await until(lambda: any(e["error"]["condition"] == "remote-server-not-found" for e in alice.errors), "a subscription to another server is refused with an error")

    for c in (alice, alice2):
        c.disconnect()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = server_args()
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
