"""Interop: slixmpp (a real XMPP client library) against Estuary's c2s listeners.

alice registered through the Matrix API and bob was created with the CLI: both log in over
XMPP with the same passwords. Checks STARTTLS + SCRAM-SHA-256, direct TLS + SCRAM-SHA-1, a
wrong password refused, XEP-0199 ping, XEP-0092 version, XEP-0202 time, XEP-0012 uptime, disco#info,
IQ routing to full JIDs (and errors where it cannot go), and messages both ways between two
sessions, plus a bounce for a recipient with no session. Prints ALL OK on success.
"""

import asyncio
import base64
import hashlib
import datetime
import ssl
import sys

import slixmpp

from checks import check, iq_condition, server_args

# The avatar alice sets through Matrix (the Rust test uploads the same bytes), and bob's.
ALICE_AVATAR = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==")
BOB_AVATAR = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, mech, direct_tls):
        super().__init__(jid, password, sasl_mech=mech)
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.enable_plaintext = False
        # The test server uses the certificate Estuary generates for itself.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0054")
        self.register_plugin("xep_0092", pconfig={"software_name": f"client-of-{jid.split('@')[0]}", "version": "1.0"})
        self.register_plugin("xep_0202")
        self.register_plugin("xep_0012")
        self.register_plugin("xep_0115")
        self.started = asyncio.get_event_loop().create_future()
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.started.done() or self.started.set_result(False))
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))

    def on_start(self, _):
        # Initial presence: messages to the bare JID go to available sessions (RFC 6121 8.5.2).
        self.send_presence()
        self.started.done() or self.started.set_result(True)

    async def login(self, host, port):
        self.connect(host, port)
        return await asyncio.wait_for(self.started, 20)


async def main(a):
    alice = Client(f"alice@{a.domain}/laptop", "alice-password", "SCRAM-SHA-256", False)
    check(await alice.login(a.host, a.starttls_port), "alice (registered over Matrix) logs in: STARTTLS + SCRAM-SHA-256")
    check(str(alice.boundjid) == f"alice@{a.domain}/laptop", f"resource bound: {alice.boundjid}")
    rtt = await alice.plugin["xep_0199"].ping(slixmpp.JID(a.domain), timeout=5)
    check(rtt is not None, "XEP-0199 ping answered")
    info = await alice.plugin["xep_0030"].get_info(jid=a.domain)
    check("urn:xmpp:ping" in info["disco_info"]["features"], "disco#info lists ping")
    fields = {
        f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")]
        for f in info.xml.findall("{http://jabber.org/protocol/disco#info}query/{jabber:x:data}x/{jabber:x:data}field")
    }
    check(fields.get("FORM_TYPE") == ["http://jabber.org/network/serverinfo"]
          and fields.get("admin-addresses") == ["mailto:admin@localhost", "xmpp:admin@localhost", "matrix:u/admin:localhost?action=chat"]
          and fields.get("abuse-addresses") == ["https://localhost/abuse"],
          f"XEP-0157 contact addresses in disco#info: {fields}")
    # XEP-0115: the caps in the stream features verify against the server's disco#info
    # (slixmpp queries node#ver and checks the hash before it records the ver).
    ver = None
    for _ in range(100):
        ver = await alice.plugin["xep_0115"].get_verstring(a.domain)
        if ver:
            break
        await asyncio.sleep(0.05)
    check(ver is not None, f"the server's entity capabilities verify (ver {ver})")
    caps = await alice.plugin["xep_0115"].get_caps(verstring=ver)
    check("urn:xmpp:carbons:2" in caps["features"], "and name its features")
    items = await alice.plugin["xep_0030"].get_items(jid=a.domain)
    services = [(i[0], i[2]) for i in items["disco_items"]["items"]]
    check(services == [(f"conference.{a.domain}", "Chatrooms")], f"disco#items of the server lists the MUC service: {services}")
    got = await iq_condition(alice.plugin["xep_0030"].get_items(jid=a.domain, node="nonexistent-node-for-test"))
    check(got == "item-not-found", f"disco of an unknown node gets item-not-found (got {got})")
    info = await alice.plugin["xep_0030"].get_info(jid=f"alice@{a.domain}")
    check(("account", "registered", None, None) in info["disco_info"]["identities"], "the account's bare JID is an account/registered")
    got = await iq_condition(alice.plugin["xep_0030"].get_info(jid=f"alice@{a.domain}", node="some-node"))
    check(got == "item-not-found", f"and an unknown node on it gets item-not-found (got {got})")
    got = await iq_condition(alice.make_iq_get(queryxmlns="urn:example:unsupported", ito=a.domain).send(timeout=5))
    check(got == "service-unavailable", f"an unsupported request gets service-unavailable, not silence (got {got})")

    wrong = Client(f"alice@{a.domain}/x", "not-the-password", "SCRAM-SHA-256", False)
    check(not await wrong.login(a.host, a.starttls_port), "a wrong password is refused")
    wrong.disconnect()

    bob = Client(f"bob@{a.domain}/phone", "bob-password", "SCRAM-SHA-1", True)
    check(await bob.login(a.host, a.tls_port), "bob (created with the CLI) logs in: direct TLS + SCRAM-SHA-1")

    # XEP-0092 and XEP-0202 of the server itself.
    v = await alice.plugin["xep_0092"].get_version(slixmpp.JID(a.domain), timeout=5)
    check(v["software_version"]["name"] == "Estuary" and v["software_version"]["version"], f"XEP-0092 version: {v['software_version']['version']}")
    check(not v["software_version"]["os"], "XEP-0092 does not disclose the operating system")
    t = await alice.plugin["xep_0202"].get_entity_time(slixmpp.JID(a.domain), timeout=5)
    # Read the raw text: slixmpp's own parser appends a second 'Z' to a correct XEP-0082 value.
    utc = t.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}utc").text
    tzo = t.xml.find("{urn:xmpp:time}time/{urn:xmpp:time}tzo").text
    skew = abs((datetime.datetime.fromisoformat(utc.replace("Z", "+00:00")) - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    check(tzo == "+00:00" and skew < 60, f"XEP-0202 time in UTC: {utc} {tzo}")

    last = await alice.plugin["xep_0012"].get_last_activity(slixmpp.JID(a.domain), timeout=5)
    check(0 <= int(last["last_activity"]["seconds"]) < 3600, f"XEP-0012 server uptime: {last['last_activity']['seconds']} s")

    # RFC 6120 10.5.3.1: an IQ for a full JID goes to that session, and its answer comes back.
    v = await alice.plugin["xep_0092"].get_version(slixmpp.JID(f"bob@{a.domain}/phone"), timeout=5)
    check(v["software_version"]["name"] == "client-of-bob" and v["from"] == f"bob@{a.domain}/phone", "an IQ to bob's full JID is answered by bob's client")
    for target, condition in ((f"bob@{a.domain}/nowhere", "service-unavailable"), (f"carol@elsewhere.example/x", "remote-server-not-found")):
        got = await iq_condition(alice.plugin["xep_0092"].get_version(slixmpp.JID(target), timeout=5))
        check(got == condition, f"an IQ to {target} gets {condition} (got {got})")

    alice.send_message(mto=f"bob@{a.domain}", mbody="hello bob", mtype="chat")
    m = await asyncio.wait_for(bob.inbox.get(), 10)
    check(m["body"] == "hello bob" and m["from"].bare == f"alice@{a.domain}", f"bob receives alice's message from {m['from']}")
    bob.send_message(mto=str(m["from"]), mbody="hello alice", mtype="chat")
    m = await asyncio.wait_for(alice.inbox.get(), 10)
    check(m["body"] == "hello alice", "alice receives bob's reply at her full JID")

    # A burst of 1,000 arrives complete and in order.
    for i in range(1000):
        alice.send_message(mto=f"bob@{a.domain}/phone", mbody=f"burst {i}", mtype="chat")
    got = [(await asyncio.wait_for(bob.inbox.get(), 30))["body"] for _ in range(1000)]
    check(got == [f"burst {i}" for i in range(1000)], "a burst of 1,000 messages arrives complete and in order")

    # vCard-temp is the shared profile: alice's Matrix display name is her FN and her Matrix
    # avatar her PHOTO; bob's FN and PHOTO set over XMPP become his Matrix display name and
    # avatar (the Rust test checks that side).
    iq = await bob.plugin["xep_0054"].get_vcard(jid=f"alice@{a.domain}")
    check(iq["vcard_temp"]["FN"] == "Alice from Matrix", f"alice's Matrix display name is her vCard FN: {iq['vcard_temp']['FN']!r}")
    photo = iq["vcard_temp"]["PHOTO"]
    check(photo["TYPE"] == "image/png" and photo["BINVAL"] == ALICE_AVATAR,
          "alice's Matrix avatar is her vCard PHOTO (same bytes, same type)")
    presences = asyncio.Queue()
    bob.add_event_handler("presence_available", lambda p: presences.put_nowait(p))
    alice.send_presence(pto=f"bob@{a.domain}/phone", pstatus="with avatar hash")
    p = await asyncio.wait_for(presences.get(), 10)
    got = p.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
    check(got is not None and got.text == hashlib.sha1(ALICE_AVATAR).hexdigest(),
          "her presence carries the avatar's SHA-1 (XEP-0153), put there by the server")
    vcard = bob.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Bob via XMPP"
    vcard["PHOTO"]["TYPE"] = "image/gif"
    vcard["PHOTO"]["BINVAL"] = BOB_AVATAR
    await bob.plugin["xep_0054"].publish_vcard(vcard)
    check(True, "bob publishes a vCard with a new FN and PHOTO")
    iq = await alice.plugin["xep_0054"].get_vcard(jid=f"bob@{a.domain}")
    check(iq["vcard_temp"]["PHOTO"]["BINVAL"] == BOB_AVATAR, "alice reads bob's new PHOTO")
    bad = bob.make_iq_set()
    bad.append(slixmpp.xmlstream.ET.fromstring(
        "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>not*base64!</BINVAL></PHOTO></vCard>"))
    got = await iq_condition(bad.send(timeout=5))
    check(got == "bad-request", f"a PHOTO that is not base64 gets bad-request ({got})")

    alice.send_message(mto=f"nobody@{a.domain}", mbody="anyone?", mtype="chat")
    m = await asyncio.wait_for(alice.inbox.get(), 10)
    check(m["type"] == "error" and m["error"]["condition"] == "service-unavailable", "a message nobody can receive bounces with service-unavailable")

    # Stanza size (RFC 6120 13.12): 200 KiB passes, 300 KiB ends the sender's stream with
    # policy-violation and reaches nobody.
    alice.send_message(mto=f"bob@{a.domain}/phone", mbody="b" * 200_000, mtype="chat")
    m = await asyncio.wait_for(bob.inbox.get(), 10)
    check(len(m["body"]) == 200_000, "a 200 KiB message is delivered whole")
    errors = asyncio.Queue()
    alice.add_event_handler("stream_error", lambda e: errors.put_nowait(e))
    alice.send_message(mto=f"bob@{a.domain}/phone", mbody="c" * 300_000, mtype="chat")
    e = await asyncio.wait_for(errors.get(), 10)
    check(e["condition"] == "policy-violation", f"a 300 KiB message ends the stream with {e['condition']}")
    await asyncio.sleep(0.5)
    check(bob.inbox.empty(), "the oversized message reached nobody")

    for c in (alice, bob):
        c.disconnect()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = server_args(port=False)
    p.add_argument("--starttls-port", type=int, required=True)
    p.add_argument("--tls-port", type=int, required=True)
    asyncio.run(main(p.parse_args()))
    sys.exit(0)
