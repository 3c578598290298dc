"""Interop: XEP-0191 blocking with slixmpp against Estuary, on the list Matrix uses.

alice blocks bob over XMPP: her other session gets the push, bob's messages and IQs to her get
service-unavailable, hers to him get not-acceptable + <blocked/>; presence stops both ways and
bob sees her go offline. The block is her Matrix
ignore list (checked over HTTP with her Matrix token), and the reverse holds: ignoring from
Matrix shows up as an XMPP block. A JID of another server stays blocked outside the Matrix
list. Prints ALL OK on success.
"""

import asyncio
import json
import sys
import urllib.request

import slixmpp

from checks import check, iq_condition, server_args, starttls_to_test_server, until


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        starttls_to_test_server(self)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0092")
        self.register_plugin("xep_0191")
        self.auto_authorize = True
        self.auto_subscribe = True
        self.presences = []
        self.add_event_handler("presence", lambda p: self.presences.append(p))
        self.started = asyncio.get_event_loop().create_future()
        self.inbox, self.pushes = asyncio.Queue(), asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))
        self.add_event_handler("blocked", lambda iq: self.pushes.put_nowait(("block", iq)))
        self.add_event_handler("unblocked", lambda iq: self.pushes.put_nowait(("unblock", iq)))

    def on_start(self, _):
        self.send_presence()
        self.started.done() or self.started.set_result(True)

    async def login(self, host, port):
        self.connect(host, port)
        return await asyncio.wait_for(self.started, 20)


def saw(client, sender, **want):
    return [p for p in client.presences if p["from"].bare == sender and all(p[k] == v for k, v in want.items())]


def matrix(a, method, path, body=None):
    req = urllib.request.Request(
        f"{a.matrix_url}/_matrix/client/v3/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {a.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


async def main(a):
    d = a.domain
    alice, alice2 = Client(f"alice@{d}/one", "alice-password"), Client(f"alice@{d}/two", "alice-password")
    bob = Client(f"bob@{d}/desk", "bob-password")
    for c in (alice, alice2, bob):
        check(await c.login(a.host, a.port), f"{c.boundjid} logs in")
    info = await alice.plugin["xep_0030"].get_info(jid=d)
    check("urn:xmpp:blocking" in info["disco_info"]["features"], "the server advertises blocking")
    check(await alice2.plugin["xep_0191"].get_blocked_jids(timeout=5) == set(), "the blocklist starts empty")

    alice.send_presence_subscription(pto=f"bob@{d}")
    await until(lambda: saw(bob, f"alice@{d}", type="available") and saw(alice, f"bob@{d}", type="available"),
                "alice and bob subscribe to each other and see each other available")

    await alice.plugin["xep_0191"].block([f"bob@{d}", "carol@elsewhere.example"], timeout=5)
    # Both of alice's sessions go unavailable for bob.
    await until(lambda: {p["from"].resource for p in saw(bob, f"alice@{d}", type="unavailable")} == {"one", "two"},
                "on the block, alice appears offline to bob (XEP-0191 3.3)")
    alice.send_presence(pshow="chat", pstatus="hidden from bob")
    bob.send_presence(pshow="away", pstatus="hidden from alice")
    await asyncio.sleep(0.5)
    check(not saw(bob, f"alice@{d}", show="chat"), "alice's presence does not reach bob across the block")
    check(not saw(alice, f"bob@{d}", show="away"), "nor bob's reach alice")
    kind, _ = await asyncio.wait_for(alice2.pushes.get(), 10)
    check(kind == "block", "alice's other session (which asked for the list) gets the block push")
    blocked = {str(j) for j in await alice2.plugin["xep_0191"].get_blocked_jids(timeout=5)}
    check(blocked == {f"bob@{d}", "carol@elsewhere.example"}, f"the blocklist holds both: {blocked}")

    ignored = matrix(a, "GET", f"user/@alice:{d}/account_data/m.ignored_user_list")
    check(set(ignored["ignored_users"]) == {f"@bob:{d}"}, f"bob is in alice's Matrix ignore list (carol has no Matrix ID): {ignored}")

    bob.send_message(mto=f"alice@{d}/one", mbody="hello?", mtype="chat")
    m = await asyncio.wait_for(bob.inbox.get(), 10)
    check(m["type"] == "error" and m["error"]["condition"] == "service-unavailable", "bob's message to alice bounces with service-unavailable")
    got = await iq_condition(bob.plugin["xep_0092"].get_version(slixmpp.JID(f"alice@{d}/one"), timeout=5))
    check(got == "service-unavailable", f"bob's IQ to alice gets service-unavailable (got {got})")
    alice.send_message(mto=f"bob@{d}/desk", mbody="you are blocked", mtype="chat")
    m = await asyncio.wait_for(alice.inbox.get(), 10)
    check(m["type"] == "error" and m["error"]["condition"] == "not-acceptable" and "urn:xmpp:blocking:errors" in str(m),
          "alice's message to bob gets not-acceptable with <blocked/>")
    await asyncio.sleep(0.3)
    check(alice.inbox.empty() and alice2.inbox.empty() and bob.inbox.empty(), "nothing got through")

    # The other direction: un-ignore from Matrix, and bob is unblocked over XMPP.
    matrix(a, "PUT", f"user/@alice:{d}/account_data/m.ignored_user_list", {"ignored_users": {}})
    blocked = {str(j) for j in await alice.plugin["xep_0191"].get_blocked_jids(timeout=5)}
    check(blocked == {"carol@elsewhere.example"}, f"after Matrix un-ignores bob, XMPP shows only carol: {blocked}")
    bob.send_message(mto=f"alice@{d}/one", mbody="hello again", mtype="chat")
    m = await asyncio.wait_for(alice.inbox.get(), 10)
    check(m["body"] == "hello again", "bob's messages reach alice again")
    alice.send_presence(pshow="dnd", pstatus="visible again")
    await until(lambda: saw(bob, f"alice@{d}", show="dnd"), "and alice's presence reaches bob again")

    # Blocked and unblocked over XMPP: each sees the other's current presence again (3.4),
    # without anyone sending new presence.
    bob.send_presence(pshow="xa", pstatus="bob now")
    await until(lambda: saw(alice, f"bob@{d}", show="xa"), "alice sees bob's new presence")
    await alice.plugin["xep_0191"].block([f"bob@{d}"], timeout=5)
    await until(lambda: len(saw(bob, f"alice@{d}", type="unavailable")) >= 4, "blocked again, alice appears offline to bob")
    bob.presences.clear()
    alice.presences.clear()
    await alice.plugin["xep_0191"].unblock([f"bob@{d}"], timeout=5)
    await until(lambda: saw(bob, f"alice@{d}", show="dnd"), "on unblock, bob gets alice's current presence again (XEP-0191 3.4)")
    await until(lambda: saw(alice, f"bob@{d}", show="xa"), "and alice gets bob's")
    for _ in range(2):
        await asyncio.wait_for(alice2.pushes.get(), 10)

    # slixmpp's unblock([]) sends an empty IQ; send the <unblock/> (no items = everyone) by hand.
    iq = alice.make_iq_set()
    iq.append(slixmpp.xmlstream.ET.Element("{urn:xmpp:blocking}unblock"))
    await iq.send(timeout=5)
    kind, _ = await asyncio.wait_for(alice2.pushes.get(), 10)
    check(kind == "unblock", "unblock-all is pushed too")
    check(await alice.plugin["xep_0191"].get_blocked_jids(timeout=5) == set(), "unblock with no items empties the list")

    # An IQ set with no payload is a bad request (RFC 6120 8.2.3), not the end of the stream.
    got = await iq_condition(alice.make_iq_set().send(timeout=5))
    check(got == "bad-request", f"an empty IQ set gets bad-request (got {got})")

    for c in (alice, alice2, bob):
        c.disconnect()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = server_args()
    p.add_argument("--matrix-url", required=True)
    p.add_argument("--token", required=True)
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
