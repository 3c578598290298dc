"""Interop: offline messages (XEP-0160, XEP-0203) and XEP-0198 stream management with slixmpp.

Phase "session": messages to an offline account wait and arrive with a delay stamp on its
next login (a chat state alone is not kept; a message to no account bounces). bob's
stream-managed session survives a dropped TCP connection: what alice sent meanwhile arrives
after resumption, once. When the resumption window (2 s in the test config) passes, what the
session never got goes offline.
Phase "burst": alice sends a numbered burst to bob, writing each body the server acked (SM
<a h=...>) to --acked, until the server goes away (the Rust test SIGKILLs it). With
--received, bob is online meanwhile and writes what he gets there.
Phase "collect": bob logs in and writes every message body it gets to --out; with --archive,
then also every body of his message archive (XEP-0313) with alice to that file.
Prints ALL OK on success.
"""

import asyncio

import slixmpp

from checks import check, server_args, starttls_to_test_server, until


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, sm=True):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        starttls_to_test_server(self)
        self.register_plugin("xep_0085")
        self.register_plugin("xep_0203")
        self.register_plugin("xep_0059")
        self.register_plugin("xep_0313")
        if sm:
            self.register_plugin("xep_0198")
        self.started = asyncio.get_event_loop().create_future()
        self.inbox = asyncio.Queue()
        self.resumed = asyncio.Event()
        self.gone = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.done() or self.started.set_result(True))
        self.add_event_handler("session_resumed", lambda _: self.resumed.set())
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))

    async def login(self, host, port):
        self.connect(host, port)
        return await asyncio.wait_for(self.started, 20)


async def bodies(client, n, timeout=10):
    got = []
    while len(got) < n:
        m = await asyncio.wait_for(client.inbox.get(), timeout)
        if m["body"]:
            got.append(m)
    return got


async def session(a):
    d = a.domain
    alice = Client(f"alice@{d}/a", "pw")
    check(await alice.login(a.host, a.port), "alice logs in with stream management")
    await until(lambda: alice.plugin["xep_0198"].sm_id is not None, "the server enables stream management (with an id)")
    alice.send_presence()
    for i in range(3):
        alice.send_message(mto=f"bob@{d}", mbody=f"off-{i}", mtype="chat")
    composing = alice.make_message(mto=f"bob@{d}", mtype="chat")
    composing["chat_state"] = "composing"
    composing.send()
    alice.send_message(mto=f"nobody@{d}", mbody="hello?", mtype="chat")
    m = await asyncio.wait_for(alice.inbox.get(), 10)
    check(m["type"] == "error" and m["error"]["condition"] == "service-unavailable",
          "a message to an account that does not exist bounces (service-unavailable)")

    bob = Client(f"bob@{d}/b", "pw")
    check(await bob.login(a.host, a.port), "bob logs in")
    bob.send_presence()
    got = await bodies(bob, 3)
    check([m["body"] for m in got] == ["off-0", "off-1", "off-2"], "bob gets the offline messages, in order")
    check(all(m["delay"]["stamp"] is not None and str(m["delay"]["from"]) == d for m in got),
          "each carries a XEP-0203 delay stamped by the server")
    check(all(str(m["from"]) == f"alice@{d}/a" for m in got), "from alice's full JID")
    await asyncio.sleep(0.5)
    check(bob.inbox.empty(), "the lone chat state was not kept")

    for i in range(5):
        alice.send_message(mto=f"bob@{d}", mbody=f"live-{i}", mtype="chat")
    got = await bodies(bob, 5)
    check([m["body"] for m in got] == [f"live-{i}" for i in range(5)], "bob gets live messages")
    await until(lambda: bob.plugin["xep_0198"].handled >= 8, "bob has counted what it handled")

    # Drop bob's TCP connection without a stream close.
    bob.transport.abort()
    await asyncio.wait_for(bob.gone.wait(), 10)
    await asyncio.sleep(0.5)
    for i in range(5):
        alice.send_message(mto=f"bob@{d}", mbody=f"gap-{i}", mtype="chat")
    await asyncio.sleep(0.3)
    bob.gone.clear()
    bob.connect(a.host, a.port)
    await asyncio.wait_for(bob.resumed.wait(), 20)
    check(True, "bob's session resumes on a new connection (<resumed/>)")
    got = await bodies(bob, 5)
    check([m["body"] for m in got] == [f"gap-{i}" for i in range(5)],
          "what alice sent while bob was cut off arrives after resumption, in order")
    await asyncio.sleep(0.5)
    check(bob.inbox.empty(), "and nothing twice")

    # The window passes: what the lost session never got goes offline.
    bob.transport.abort()
    await asyncio.wait_for(bob.gone.wait(), 10)
    await asyncio.sleep(0.5)
    for i in range(3):
        alice.send_message(mto=f"bob@{d}", mbody=f"late-{i}", mtype="chat")
    await asyncio.sleep(a.resume_seconds + 1.5)
    bob2 = Client(f"bob@{d}/c", "pw", sm=False)
    check(await bob2.login(a.host, a.port), "bob logs in anew after the resumption window")
    bob2.send_presence()
    got = await bodies(bob2, 3)
    check([m["body"] for m in got] == ["late-0", "late-1", "late-2"],
          "messages for the expired session were kept offline")
    for c in (alice, bob2):
        c.disconnect()
    print("ALL OK", flush=True)


async def burst(a):
    d = a.domain
    if a.received:
        # bob online during the burst, with stream management; what reaches him is recorded.
        bob = Client(f"bob@{d}/online", "pw")
        check(await bob.login(a.host, a.port), "bob logs in with stream management")
        bob.send_presence()
        received = open(a.received, "a", encoding="utf-8")
        bob.add_event_handler("message", lambda m: m["body"] and (received.write(m["body"] + "\n"), received.flush()))
        await asyncio.sleep(0.3)
    alice = Client(f"alice@{d}/burst", "pw")
    check(await alice.login(a.host, a.port), "alice logs in with stream management")
    await until(lambda: alice.plugin["xep_0198"].sm_id is not None, "stream management enabled")
    with open(a.acked, "a", encoding="utf-8") as acked:
        alice.add_event_handler("stanza_acked", lambda s: s.name == "message" and (acked.write(s["body"] + "\n"), acked.flush()))
        for i in range(a.count):
            alice.send_message(mto=f"bob@{d}", mbody=f"burst-{i}", mtype="chat")
            if i % 50 == 0:
                await asyncio.sleep(0.01)
            if alice.gone.is_set():
                break
        await asyncio.wait_for(alice.gone.wait(), 120)
    check(True, "the server went away during the burst")
    print("ALL OK", flush=True)


async def collect(a):
    d = a.domain
    bob = Client(f"bob@{d}/collect", "pw", sm=False)
    check(await bob.login(a.host, a.port), "bob logs in after the restart")
    bob.send_presence()
    got = []
    while True:
        try:
            m = await asyncio.wait_for(bob.inbox.get(), 5)
        except asyncio.TimeoutError:
            break
        if m["body"]:
            got.append(m["body"])
    with open(a.out, "w", encoding="utf-8") as out:
        out.write("\n".join(got) + "\n")
    if a.archive:
        mam = bob.plugin["xep_0313"]
        archived = [m["mam_result"]["forwarded"]["stanza"]["body"]
                    async for m in mam.iterate(with_jid=slixmpp.JID(f"alice@{d}"), rsm={"max": 250})]
        with open(a.archive, "w", encoding="utf-8") as out:
            out.write("\n".join(archived) + "\n")
        print(f"bob's archive holds {len(archived)} messages", flush=True)
    # The Rust test compares these with what was acknowledged (none may be missing).
    print(f"bob got {len(got)} messages after the restart", flush=True)
    bob.disconnect()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = server_args()
    p.add_argument("--phase", choices=["session", "burst", "collect"], default="session")
    p.add_argument("--resume-seconds", dest="resume_seconds", type=float, default=2)
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--acked")
    p.add_argument("--received")
    p.add_argument("--out")
    p.add_argument("--archive")
    a = p.parse_args()
    asyncio.run({"session": session, "burst": burst, "collect": collect}[a.phase](a))
