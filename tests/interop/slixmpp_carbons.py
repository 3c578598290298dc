"""Interop: XEP-0280 Message Carbons with slixmpp against Estuary.

alice has two sessions (laptop, phone) with carbons enabled and one (watch) without. bob writes
to alice/laptop: the phone gets a <received/> copy, the watch gets nothing. alice answers from
the laptop: the phone gets a <sent/> copy. A message marked <private/> is not copied. Messages
to the bare JID follow presence priorities (RFC 6121 8.5.2), with carbons for the sessions the
message did not reach. Prints ALL OK on success.
"""

import asyncio
import sys

import slixmpp

from checks import check, server_args, starttls_to_test_server


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        starttls_to_test_server(self)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0280")
        self.started = asyncio.get_event_loop().create_future()
        self.inbox, self.received, self.sent = asyncio.Queue(), asyncio.Queue(), asyncio.Queue()
        self.add_event_handler("session_start", lambda _: self.started.done() or self.started.set_result(True))
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))
        self.add_event_handler("carbon_received", lambda m: self.received.put_nowait(m))
        self.add_event_handler("carbon_sent", lambda m: self.sent.put_nowait(m))

    async def login(self, host, port):
        self.connect(host, port)
        return await asyncio.wait_for(self.started, 20)


async def main(a):
    d = a.domain
    laptop, phone, watch = (Client(f"alice@{d}/{r}", "alice-password") for r in ("laptop", "phone", "watch"))
    bob = Client(f"bob@{d}/desk", "bob-password")
    for c in (laptop, phone, watch, bob):
        check(await c.login(a.host, a.port), f"{c.boundjid} logs in")
    info = await laptop.plugin["xep_0030"].get_info(jid=d)
    check("urn:xmpp:carbons:2" in info["disco_info"]["features"], "the server advertises carbons")
    for c in (laptop, phone):
        await c.plugin["xep_0280"].enable(timeout=5)
    check(True, "carbons enabled on alice's laptop and phone")
    # Available, at priorities laptop 5 > phone 1 > watch 0.
    for c, prio in ((laptop, 5), (phone, 1), (watch, 0), (bob, 0)):
        c.send_presence(ppriority=prio)
    await asyncio.sleep(0.5)

    bob.send_message(mto=f"alice@{d}/laptop", mbody="to your laptop", mtype="chat")
    m = await asyncio.wait_for(laptop.inbox.get(), 10)
    check(m["body"] == "to your laptop", "the laptop receives bob's message")
    c = await asyncio.wait_for(phone.received.get(), 10)
    fwd = c["carbon_received"]
    check(fwd["body"] == "to your laptop" and fwd["from"] == f"bob@{d}/desk" and c["from"] == f"alice@{d}",
          f"the phone gets a <received/> carbon from its own account, forwarding bob's message ({fwd['from']})")

    laptop.send_message(mto=f"bob@{d}/desk", mbody="answer from the laptop", mtype="chat")
    m = await asyncio.wait_for(bob.inbox.get(), 10)
    check(m["body"] == "answer from the laptop", "bob receives the answer")
    c = await asyncio.wait_for(phone.sent.get(), 10)
    fwd = c["carbon_sent"]
    check(fwd["body"] == "answer from the laptop" and fwd["to"] == f"bob@{d}/desk",
          "the phone gets a <sent/> carbon of the laptop's answer")

    private = laptop.make_message(mto=f"bob@{d}/desk", mbody="just between us", mtype="chat")
    private.append(slixmpp.xmlstream.ET.Element("{urn:xmpp:carbons:2}private"))
    private.send()
    m = await asyncio.wait_for(bob.inbox.get(), 10)
    check(m["body"] == "just between us", "bob receives the private message")
    await asyncio.sleep(0.5)
    check(phone.sent.empty() and phone.received.empty(), "a <private/> message is not copied")
    check(watch.sent.empty() and watch.received.empty() and watch.inbox.empty(),
          "the watch, without carbons, received no copies and no messages for other sessions")

    # RFC 6121 8.5.2.1.1: a chat message to the bare JID goes to the highest-priority session;
    # the phone (carbons on) gets a <received/> copy, the watch (carbons off) nothing.
    bob.send_message(mto=f"alice@{d}", mbody="to alice, wherever", mtype="chat")
    m = await asyncio.wait_for(laptop.inbox.get(), 10)
    check(m["body"] == "to alice, wherever", "the highest-priority session (laptop) gets a message to the bare JID")
    c = await asyncio.wait_for(phone.received.get(), 10)
    check(c["carbon_received"]["body"] == "to alice, wherever", "the lower-priority phone gets it as a carbon")
    await asyncio.sleep(0.5)
    check(phone.inbox.empty() and watch.inbox.empty(), "nobody else gets the message itself")

    # Equal top priority: both get it (and no carbon, as both have the message).
    phone.send_presence(ppriority=5)
    await asyncio.sleep(0.5)
    bob.send_message(mto=f"alice@{d}", mbody="tie", mtype="chat")
    for c in (laptop, phone):
        m = await asyncio.wait_for(c.inbox.get(), 10)
        check(m["body"] == "tie", f"{c.boundjid.resource} (top priority, tied) gets the message")
    await asyncio.sleep(0.5)
    check(phone.received.empty() and laptop.received.empty(), "no carbon for a session that got the message")

    # Negative priority: never chosen for the bare JID.
    for c in (laptop, phone, watch):
        c.send_presence(ppriority=-1)
    await asyncio.sleep(0.5)
    bob.send_message(mto=f"alice@{d}", mbody="anyone?", mtype="chat")
    # Kept offline (RFC 6121 §8.5.2.2.1); sessions with carbons still see a copy.
    for c in (laptop, phone):
        fwd = await asyncio.wait_for(c.received.get(), 10)
        check(fwd["carbon_received"]["body"] == "anyone?", f"{c.boundjid.resource} (negative priority) gets only a carbon")
    await asyncio.sleep(0.5)
    check(bob.inbox.empty() and laptop.inbox.empty() and phone.inbox.empty(),
          "with only negative priorities, a message to the bare JID is kept offline, not bounced")
    for c in (laptop, phone):
        c.send_presence(ppriority=0)
    await asyncio.sleep(0.3)

    await phone.plugin["xep_0280"].disable(timeout=5)
    bob.send_message(mto=f"alice@{d}/laptop", mbody="after disable", mtype="chat")
    await asyncio.wait_for(laptop.inbox.get(), 10)
    await asyncio.sleep(0.5)
    check(phone.received.empty(), "after <disable/> the phone gets no more carbons")

    for c in (laptop, phone, watch, bob):
        c.disconnect()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = server_args()
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
