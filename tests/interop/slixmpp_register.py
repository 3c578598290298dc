"""Interop: XEP-0077 In-Band Registration with slixmpp against Estuary.

Phase "open": carol registers in band, logs in with the new account, reads her registration,
changes her password (the Rust test then checks both on Matrix), and a taken name is refused.
Phase "remove": carol removes her account in band; the stream ends.
Phase "closed": with registration closed the feature is not offered and a registration
attempt (raw, before authentication) is refused with not-allowed.
Prints ALL OK on success.
"""

import asyncio
import re
import socket
import ssl

import slixmpp
from slixmpp.exceptions import IqError

from checks import check, iq_condition, server_args, starttls_to_test_server


class Registrant(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        starttls_to_test_server(self)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = False
        self.started = asyncio.get_event_loop().create_future()
        self.registered = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", lambda _: self.started.done() or self.started.set_result(True))
        self.add_event_handler("register", self.on_register)
        self.add_event_handler("disconnected", lambda _: self.started.done() or self.started.set_result(False))

    async def on_register(self, form):
        check(form["register"]["instructions"] != "", "the server asks for a user name and password")
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=10)
            self.registered.set_result("registered")
        except IqError as e:
            self.registered.set_result(e.iq["error"]["condition"])
            self.disconnect()


async def open_phase(a):
    d = a.domain
    carol = Registrant(f"carol@{d}/r", "carol-pw-1")
    carol.connect(a.host, a.port)
    check(await asyncio.wait_for(carol.registered, 20) == "registered", "carol registers in band")
    check(await asyncio.wait_for(carol.started, 20), "and logs in with the new account")
    reg = await carol.plugin["xep_0077"].get_registration()
    check(reg["register"]["registered"] and reg["register"]["username"] == "carol",
          "her registration reads back (<registered/>, username carol)")
    await carol.plugin["xep_0077"].change_password("carol-pw-2", timeout=10)
    check(True, "she changes her password in band")
    empty = await iq_condition(carol.plugin["xep_0077"].change_password("", timeout=10))
    check(empty == "not-acceptable", f"an empty password is not acceptable ({empty})")
    carol.disconnect()

    again = Registrant(f"carol@{d}/r", "whatever-pw")
    again.connect(a.host, a.port)
    check(await asyncio.wait_for(again.registered, 20) == "conflict", "a taken user name gets conflict")
    print("ALL OK", flush=True)


async def remove_phase(a):
    d = a.domain
    c = slixmpp.ClientXMPP(f"carol@{d}/x", "carol-pw-2", sasl_mech="SCRAM-SHA-256")
    starttls_to_test_server(c)
    c.register_plugin("xep_0077")
    started = asyncio.get_event_loop().create_future()
    gone = asyncio.Event()
    c.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    c.add_event_handler("disconnected", lambda _: gone.set())
    c.connect(a.host, a.port)
    check(await asyncio.wait_for(started, 20), "carol logs in with her new password")
    await c.plugin["xep_0077"].cancel_registration(timeout=10)
    check(True, "she removes her account in band")
    await asyncio.wait_for(gone.wait(), 10)
    check(True, "and the server ends the stream")
    print("ALL OK", flush=True)


def closed_phase(a):
    raw = socket.create_connection((a.host, a.port), timeout=10)
    header = (f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              f"xmlns:stream='http://etherx.jabber.org/streams' to='{a.domain}' version='1.0'>").encode()

    def read_until(sock, marker):
        data = b""
        while marker not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode()

    raw.sendall(header)
    read_until(raw, b"</stream:features>")
    raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(raw, b"proceed")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(raw, server_hostname=a.domain)
    tls.sendall(header)
    features = read_until(tls, b"</stream:features>")
    check("iq-register" not in features, "with registration closed, the feature is not offered")
    tls.sendall(b"<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
                b"<username>mallory</username><password>pw-mallory</password></query></iq>")
    reply = read_until(tls, b"</iq>")
    check(re.search(r"<not-allowed", reply) is not None, "a registration attempt is refused (not-allowed)")
    tls.close()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = server_args()
    p.add_argument("--phase", choices=["open", "remove", "closed"], required=True)
    a = p.parse_args()
    if a.phase == "closed":
        closed_phase(a)
    else:
        asyncio.run({"open": open_phase, "remove": remove_phase}[a.phase](a))
