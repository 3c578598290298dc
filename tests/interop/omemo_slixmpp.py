"""Interop: OMEMO through Estuary with slixmpp-omemo (both OMEMO versions the library speaks).

Phase "exchange": alice and bob (subscribed to each other) publish their OMEMO device lists
and bundles over PEP, then exchange encrypted messages and each decrypts the other's. Then bob
goes offline and alice sends one more, which the server keeps offline (ciphertext only).
Phase "offline": bob comes back and decrypts the message kept for him.
OMEMO state lives in JSON files under --state, so the phases share it.
Prints ALL OK on success.
"""

import asyncio
import json
import sys
from pathlib import Path

import slixmpp
from omemo.storage import Just, Nothing, Storage
from slixmpp.jid import JID
from slixmpp.plugins import register_plugin
from slixmpp_omemo import XEP_0384

from checks import check, server_args, starttls_to_test_server, until

MARKER = "omemo-secret-4242"


class FileStorage(Storage):
    """OMEMO library state in one JSON file."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    async def _load(self, key):
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key, value):
        self.data[key] = value
        self.path.write_text(json.dumps(self.data))

    async def _delete(self, key):
        self.data.pop(key, None)
        self.path.write_text(json.dumps(self.data))


class OmemoPlugin(XEP_0384):
    default_config = {"fallback_message": "This message is OMEMO encrypted.", "state_file": None}

    def plugin_init(self):
        self._storage = FileStorage(self.state_file)
        super().plugin_init()

    @property
    def storage(self):
        return self._storage

    @property
    def _btbv_enabled(self):
        # Blind trust before verification: the test has no user to compare fingerprints.
        return True

    async def _devices_blindly_trusted(self, blindly_trusted, identifier):
        pass

    async def _prompt_manual_trust(self, manually_trusted, identifier):
        raise AssertionError(f"manual trust asked for {manually_trusted}")


register_plugin(OmemoPlugin)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, state):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        starttls_to_test_server(self)
        self.register_plugin("xep_0380")
        self.register_plugin("xep_0384", {"state_file": state}, module=sys.modules[__name__])
        self.started = asyncio.get_event_loop().create_future()
        self.omemo_ready = asyncio.Event()
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", lambda _: self.started.done() or self.started.set_result(True))
        self.add_event_handler("omemo_initialized", lambda _: self.omemo_ready.set())
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))
        self.add_event_handler("presence_subscribe", lambda p: self.send_presence(pto=p["from"].bare, ptype="subscribed"))

    async def login(self, host, port):
        self.connect(host, port)
        await asyncio.wait_for(self.started, 20)
        self.send_presence()
        await asyncio.wait_for(self.omemo_ready.wait(), 60)
        return True

    async def send_encrypted(self, to, body):
        omemo = self.plugin["xep_0384"]
        msg = self.make_message(mto=JID(to), mtype="chat")
        msg["body"] = body
        encrypted, errors = await omemo.encrypt_message(msg, {JID(to)})
        check(encrypted is not None, f"{self.boundjid.bare} encrypts for {to} ({errors or 'no errors'})")
        encrypted.send()

    async def receive_encrypted(self, timeout=20):
        omemo = self.plugin["xep_0384"]
        while True:
            m = await asyncio.wait_for(self.inbox.get(), timeout)
            if m["type"] in ("chat", "normal") and omemo.is_encrypted(m):
                plain, _device = await omemo.decrypt_message(m)
                return m, plain["body"]


async def knows_devices(client, peer, timeout=20):
    manager = await client.plugin["xep_0384"].get_session_manager()
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await manager.get_device_information(peer):
            return True
        await asyncio.sleep(0.1)
    return False


async def exchange(a):
    d = a.domain
    alice = Client(f"alice@{d}/omemo", "pw", f"{a.state}/alice.json")
    bob = Client(f"bob@{d}/omemo", "pw", f"{a.state}/bob.json")
    for c in (alice, bob):
        check(await c.login(a.host, a.port), f"{c.boundjid} logs in and publishes its OMEMO device and bundle")
    alice.send_presence_subscription(pto=f"bob@{d}")
    bob.send_presence_subscription(pto=f"alice@{d}")
    await until(lambda: alice.client_roster[f"bob@{d}"]["subscription"] == "both"
                and bob.client_roster[f"alice@{d}"]["subscription"] == "both",
                "alice and bob are subscribed to each other", timeout=30)
    # With a mutual subscription, slixmpp-omemo takes a contact's device list from PEP
    # notifications only (it does not fetch it). The server sends the contact's last
    # device-list item once it has the subscriber's presence, which may come after the roster
    # push that says "both"; encrypting before it arrives fails (NoEligibleDevices), in any
    # client. So each waits until it knows the other's device, as it would from PEP.
    for c, peer in ((alice, f"bob@{d}"), (bob, f"alice@{d}")):
        check(await knows_devices(c, peer), f"{c.boundjid.bare} has {peer}'s OMEMO device list from PEP")

    await alice.send_encrypted(f"bob@{d}", f"{MARKER} hello bob")
    m, body = await bob.receive_encrypted()
    check(body == f"{MARKER} hello bob", "bob decrypts alice's OMEMO message")
    check(MARKER not in str(m), "what crossed the server was ciphertext")
    await bob.send_encrypted(f"alice@{d}", f"{MARKER} hello alice")
    _, body = await alice.receive_encrypted()
    check(body == f"{MARKER} hello alice", "alice decrypts bob's answer")

    bob.disconnect()
    await asyncio.sleep(1.0)
    await alice.send_encrypted(f"bob@{d}", f"{MARKER} while you were away")
    await asyncio.sleep(1.0)
    alice.disconnect()
    await asyncio.sleep(0.5)
    print("ALL OK", flush=True)


async def offline(a):
    d = a.domain
    bob = Client(f"bob@{d}/omemo", "pw", f"{a.state}/bob.json")
    check(await bob.login(a.host, a.port), "bob logs in again")
    m, body = await bob.receive_encrypted()
    check(body == f"{MARKER} while you were away" and m["delay"]["stamp"] is not None,
          "bob decrypts the OMEMO message the server kept offline")
    bob.disconnect()
    await asyncio.sleep(0.5)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = server_args()
    p.add_argument("--state", required=True)
    p.add_argument("--phase", choices=["exchange", "offline"], required=True)
    a = p.parse_args()
    asyncio.run({"exchange": exchange, "offline": offline}[a.phase](a))
