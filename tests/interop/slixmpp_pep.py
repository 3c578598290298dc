"""Interop: XEP-0163 PEP with slixmpp against Estuary.

alice and bob are subscribed to each other's presence; carol is not. Clients announce the
nodes they want (node+notify) in their XEP-0115 caps; the server learns them from presence.
Covers publish with publish-options (auto-create, preconditions), notifications filtered by
caps, items for a contact and refused for a stranger (presence access), open access, the
OMEMO (legacy and OMEMO 2) device-list nodes readable by a contact, max_items, retract with
notify, node configuration, whitelist, the last item on login, node deletion, disco of the
account's PEP service, and bookmarks kept in sync in their three homes (XEP-0402 items,
private XML and the XEP-0048 PEP node). Prints ALL OK on success.
"""

import asyncio
import hashlib

import slixmpp
from slixmpp.plugins.xep_0004 import Form
from slixmpp.xmlstream import ET

from checks import check, iq_condition, server_args, starttls_to_test_server, until

TEST = "urn:example:estuary-pep-test"
LEGACY_DEVICES = "eu.siacs.conversations.axolotl.devicelist"
OMEMO2_DEVICES = "urn:xmpp:omemo:2:devices"
AVATAR_META = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
OLD_BOOKMARKS = "storage:bookmarks"
# alice's avatar over PEP (the Rust test checks it became her Matrix avatar), and the one
# she sets later through her vCard.
PEP_AVATAR = b"\x89PNG\r\n\x1a\npep-avatar-bytes"
VCARD_AVATAR = b"GIF89a-vcard-avatar"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, interests=()):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        starttls_to_test_server(self)
        for p in ("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0084", "xep_0054"):
            self.register_plugin(p)
        self.interests = interests
        self.started = asyncio.get_event_loop().create_future()
        self.events = asyncio.Queue()
        self.add_event_handler("session_start", lambda _: self.started.done() or self.started.set_result(True))
        self.add_event_handler("pubsub_publish", lambda m: self.events.put_nowait(("publish", m)))
        self.add_event_handler("pubsub_retract", lambda m: self.events.put_nowait(("retract", m)))
        self.add_event_handler("pubsub_delete", lambda m: self.events.put_nowait(("delete", m)))
        self.add_event_handler("presence_subscribe", lambda p: self.send_presence(pto=p["from"].bare, ptype="subscribed"))

    async def login(self, host, port):
        self.connect(host, port)
        await asyncio.wait_for(self.started, 20)
        for ns in self.interests:
            self.plugin["xep_0163"].add_interest(ns)
        await self.plugin["xep_0115"].update_caps(broadcast=False)
        self.send_presence()
        return True


def payload(text, ns=TEST):
    el = ET.Element(f"{{{ns}}}value")
    el.text = text
    return el


def options(**fields):
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
    for k, v in fields.items():
        form.add_field(var=f"pubsub#{k}", value=v)
    return form


async def next_event(c, timeout=20):
    return await asyncio.wait_for(c.events.get(), timeout)


async def two_kinds(c):
    """The kinds of the client's next notifications, until two kinds have come (publish and
    retract, in whichever order)."""
    kinds = set()
    while len(kinds) < 2:
        kind, _ = await next_event(c)
        kinds.add(kind)
    return kinds


def texts(items_iq):
    return [item["payload"].text for item in items_iq["pubsub"]["items"]]


async def main(a):
    d = a.domain
    alice = Client(f"alice@{d}/a", "pw", [TEST, LEGACY_DEVICES, BOOKMARKS])
    bob = Client(f"bob@{d}/b", "pw", [TEST, LEGACY_DEVICES, OMEMO2_DEVICES, AVATAR_META])
    carol = Client(f"carol@{d}/c", "pw", [TEST])
    for c in (alice, bob, carol):
        check(await c.login(a.host, a.port), f"{c.boundjid} logs in")
    alice.send_presence_subscription(pto=f"bob@{d}")
    bob.send_presence_subscription(pto=f"alice@{d}")
    await until(lambda: alice.client_roster[f"bob@{d}"]["subscription"] == "both"
                and bob.client_roster[f"alice@{d}"]["subscription"] == "both",
                "alice and bob are subscribed to each other", timeout=30)

    info = await bob.plugin["xep_0030"].get_info(jid=f"alice@{d}")
    check(("pubsub", "pep", None, None) in info["disco_info"]["identities"], "alice's bare JID is a PEP service")
    check("http://jabber.org/protocol/pubsub#publish-options" in info["disco_info"]["features"],
          "and supports publish-options")

    # Publish with publish-options: the node is created with them; bob (a contact who wants
    # the node) is notified, and so is alice's own session; carol (no subscription) is not.
    await alice.plugin["xep_0060"].publish(f"alice@{d}", TEST, id="one", payload=payload("first"),
                                           options=options(access_model="presence"))
    kind, m = await next_event(bob)
    check(kind == "publish" and m["pubsub_event"]["items"]["item"]["payload"].text == "first"
          and str(m["from"]) == f"alice@{d}", "bob is notified of alice's item (he asked for node+notify)")
    kind, m = await next_event(alice)
    check(kind == "publish", "alice's own session is notified too")
    await asyncio.sleep(0.5)
    check(carol.events.empty(), "carol, not subscribed to alice's presence, gets nothing")

    items = await bob.plugin["xep_0060"].get_items(f"alice@{d}", TEST)
    check(texts(items) == ["first"], "bob reads the item")
    got = await iq_condition(carol.plugin["xep_0060"].get_items(f"alice@{d}", TEST))
    check(got == "not-authorized", f"carol may not read a presence-access node ({got})")

    # A publish whose options contradict the node's configuration is refused.
    try:
        await alice.plugin["xep_0060"].publish(f"alice@{d}", TEST, payload=payload("x"),
                                               options=options(access_model="open"))
        got = "a result"
    except slixmpp.exceptions.IqError as e:
        got = (e.iq["error"]["condition"], e.iq.xml.find(
            "{jabber:client}error/{http://jabber.org/protocol/pubsub#errors}precondition-not-met") is not None)
    check(got == ("conflict", True), f"conflicting publish-options: conflict + precondition-not-met ({got})")

    # Node configuration: read it, open the node, and carol can read it.
    conf = await alice.plugin["xep_0060"].get_node_config(f"alice@{d}", TEST)
    fields = conf["pubsub_owner"]["configure"]["form"].get_fields()
    check(fields["pubsub#access_model"]["value"] == "presence", "the node's configuration reads back")
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#node_config")
    form.add_field(var="pubsub#access_model", value="open")
    form.add_field(var="pubsub#max_items", value="2")
    await alice.plugin["xep_0060"].set_node_config(f"alice@{d}", TEST, form)
    items = await carol.plugin["xep_0060"].get_items(f"alice@{d}", TEST)
    check(texts(items) == ["first"], "after alice opens the node, carol reads it")

    # max_items = 2 keeps the two newest.
    for n in ("second", "third"):
        await alice.plugin["xep_0060"].publish(f"alice@{d}", TEST, id=n, payload=payload(n))
    items = await bob.plugin["xep_0060"].get_items(f"alice@{d}", TEST)
    check(texts(items) == ["second", "third"], f"max_items 2 keeps the newest two: {texts(items)}")
    while not bob.events.empty():
        bob.events.get_nowait()

    # Retract with notify.
    await alice.plugin["xep_0060"].retract(f"alice@{d}", TEST, "second", notify=True)
    kind, m = await next_event(bob)
    check(kind == "retract", "bob is notified of the retraction")
    got = await iq_condition(alice.plugin["xep_0060"].retract(f"alice@{d}", TEST, "second"))
    check(got == "item-not-found", f"retracting it again: item-not-found ({got})")

    # OMEMO device lists (legacy and OMEMO 2) with open access, readable by a contact.
    devices = ET.Element("{eu.siacs.conversations.axolotl}list")
    ET.SubElement(devices, "{eu.siacs.conversations.axolotl}device", id="12345")
    await alice.plugin["xep_0060"].publish(f"alice@{d}", LEGACY_DEVICES, id="current", payload=devices,
                                           options=options(access_model="open"))
    items = await bob.plugin["xep_0060"].get_items(f"alice@{d}", LEGACY_DEVICES)
    dev = items["pubsub"]["items"]["item"]["payload"].find("{eu.siacs.conversations.axolotl}device")
    check(dev is not None and dev.get("id") == "12345", "bob reads alice's legacy OMEMO device list")
    devices2 = ET.Element("{urn:xmpp:omemo:2}devices")
    ET.SubElement(devices2, "{urn:xmpp:omemo:2}device", id="777")
    await alice.plugin["xep_0060"].publish(f"alice@{d}", OMEMO2_DEVICES, id="current", payload=devices2,
                                           options=options(access_model="open", max_items="max"))
    items = await carol.plugin["xep_0060"].get_items(f"alice@{d}", OMEMO2_DEVICES)
    check(items["pubsub"]["items"]["item"]["payload"].find("{urn:xmpp:omemo:2}device").get("id") == "777",
          "an OMEMO 2 device list with open access is readable by anyone")

    # The last item when a session that wants the node comes online.
    bob2 = Client(f"bob@{d}/b2", "pw", [TEST])
    check(await bob2.login(a.host, a.port), "bob logs in a second session that wants the node")
    kind, m = await next_event(bob2)
    check(kind == "publish" and m["pubsub_event"]["items"]["item"]["payload"].text == "third",
          "and gets the node's last item")

    # Whitelist: only the owner.
    await alice.plugin["xep_0060"].publish(f"alice@{d}", "urn:example:private", payload=payload("secret", "urn:example:private"),
                                           options=options(access_model="whitelist"))
    got = await iq_condition(bob.plugin["xep_0060"].get_items(f"alice@{d}", "urn:example:private"))
    check(got == "not-allowed", f"a whitelist node is the owner's alone ({got})")
    nodes = await bob.plugin["xep_0030"].get_items(jid=f"alice@{d}")
    names = {i[1] for i in nodes["disco_items"]["items"]}
    check(TEST in names and "urn:example:private" not in names, f"disco#items lists the nodes bob may read: {names}")

    # XEP-0084 avatar over PEP = the profile avatar = the vCard PHOTO (XEP-0398).
    check("urn:xmpp:pep-vcard-conversion:0" in info["disco_info"]["features"], "the server converts PEP and vCard avatars")
    while not bob.events.empty():
        bob.events.get_nowait()
    avatar_id = hashlib.sha1(PEP_AVATAR).hexdigest()
    await alice.plugin["xep_0084"].publish_avatar(PEP_AVATAR)
    await alice.plugin["xep_0084"].publish_avatar_metadata({"id": avatar_id, "type": "image/png", "bytes": len(PEP_AVATAR)})
    kind, m = await next_event(bob)
    check(kind == "publish" and m["pubsub_event"]["items"]["node"] == AVATAR_META
          and m["pubsub_event"]["items"]["item"]["id"] == avatar_id, "bob is notified of alice's new avatar metadata")
    card = await bob.plugin["xep_0054"].get_vcard(jid=f"alice@{d}")
    check(card["vcard_temp"]["PHOTO"]["BINVAL"] == PEP_AVATAR, "alice's vCard PHOTO is the avatar she published over PEP")
    vcard = alice.plugin["xep_0054"].make_vcard()
    vcard["PHOTO"]["TYPE"] = "image/gif"
    vcard["PHOTO"]["BINVAL"] = VCARD_AVATAR
    await alice.plugin["xep_0054"].publish_vcard(vcard)
    kind, m = await next_event(bob)
    new_id = hashlib.sha1(VCARD_AVATAR).hexdigest()
    check(kind == "publish" and m["pubsub_event"]["items"]["item"]["id"] == new_id,
          "a vCard PHOTO change is announced on the avatar metadata node")
    data = await bob.plugin["xep_0084"].retrieve_avatar(f"alice@{d}", new_id)
    check(data["pubsub"]["items"]["item"]["avatar_data"]["value"] == VCARD_AVATAR, "and its data reads back over PEP")
    await alice.plugin["xep_0084"].publish_avatar(PEP_AVATAR)
    await alice.plugin["xep_0084"].publish_avatar_metadata({"id": avatar_id, "type": "image/png", "bytes": len(PEP_AVATAR)})
    got = await iq_condition(alice.plugin["xep_0084"].publish_avatar_metadata(
        {"id": "0" * 40, "type": "image/png", "bytes": 3}))
    check(got == "bad-request", f"metadata for data never published is refused ({got})")

    # Bookmarks 2 (XEP-0402) and the XEP-0048 view of them in private storage (XEP-0049).
    check("urn:xmpp:bookmarks:1#compat" in info["disco_info"]["features"], "bookmarks are kept in sync both ways")
    conference = ET.fromstring(f"<conference xmlns='{BOOKMARKS}' name='Lobby' autojoin='true'><nick>al</nick></conference>")
    await alice.plugin["xep_0060"].publish(f"alice@{d}", BOOKMARKS, id=f"lobby@conference.{d}", payload=conference,
                                           options=options(access_model="whitelist", max_items="max"))
    got = await iq_condition(bob.plugin["xep_0060"].get_items(f"alice@{d}", BOOKMARKS))
    check(got == "not-allowed", f"alice's bookmarks are hers alone ({got})")

    async def private(client, payload=None, ns="storage:bookmarks", name="storage"):
        iq = client.make_iq_set() if payload is not None else client.make_iq_get()
        query = ET.Element("{jabber:iq:private}query")
        query.append(payload if payload is not None else ET.Element(f"{{{ns}}}{name}"))
        iq.append(query)
        return await iq.send(timeout=10)

    got = await private(alice)
    old = got.xml.find("{jabber:iq:private}query/{storage:bookmarks}storage/{storage:bookmarks}conference")
    check(old is not None and old.get("jid") == f"lobby@conference.{d}" and old.get("name") == "Lobby"
          and old.find("{storage:bookmarks}nick").text == "al", "the XEP-0048 view shows the XEP-0402 bookmark")
    while not alice.events.empty():
        alice.events.get_nowait()
    storage = ET.fromstring(
        "<storage xmlns='storage:bookmarks'>"
        f"<conference jid='dev@conference.{d}' name='Dev' autojoin='false'><nick>alice</nick></conference>"
        "<url name='Docs' url='https://example.org/docs'/></storage>")
    await private(alice, storage)
    items = await alice.plugin["xep_0060"].get_items(f"alice@{d}", BOOKMARKS)
    ids = [i["id"] for i in items["pubsub"]["items"]]
    check(ids == [f"dev@conference.{d}"], f"a bookmark written the old way replaces the XEP-0402 items: {ids}")
    check(await two_kinds(alice) == {"publish", "retract"}, "and alice's sessions hear of the change")
    got = await private(alice)
    check(got.xml.find("{jabber:iq:private}query/{storage:bookmarks}storage/{storage:bookmarks}url") is not None,
          "what XEP-0402 cannot hold (a URL) is kept in the old storage")

    # The XEP-0048 PEP node storage:bookmarks (XEP-0223, XEP-0402 §5.3 compat-pep, XEP-0411):
    # one item, `current`, a view of the same bookmarks, alice's alone.
    features = info["disco_info"]["features"]
    check("urn:xmpp:bookmarks:1#compat-pep" in features and "urn:xmpp:bookmarks-conversion:0" in features,
          "the account advertises that the storage:bookmarks PEP node is kept in sync too")

    def conferences(storage):
        """{room JID: (name, nick, password)} of a storage:bookmarks element."""
        out = {}
        for c in storage.findall("{storage:bookmarks}conference"):
            nick, password = c.find("{storage:bookmarks}nick"), c.find("{storage:bookmarks}password")
            out[c.get("jid")] = (c.get("name"), nick is not None and nick.text, password is not None and password.text)
        return out

    def old_pep(items_iq):
        """(item ids, the storage element of the first item) of items from storage:bookmarks."""
        items = list(items_iq["pubsub"]["items"])
        return [i["id"] for i in items], items[0]["payload"] if items else None

    async def storage_event(client):
        """The storage element of the next storage:bookmarks notification the client gets."""
        while True:
            kind, m = await next_event(client)
            if kind == "publish" and m["pubsub_event"]["items"]["node"] == OLD_BOOKMARKS:
                item = m["pubsub_event"]["items"]["item"]
                check(item["id"] == "current", "a storage:bookmarks notification carries the item current")
                return item["payload"]

    # An old client's session (storage:bookmarks+notify) gets the current view when it comes
    # online, built from the XEP-0402 items and the URL kept in private XML.
    old_client = Client(f"alice@{d}/old", "pw", [OLD_BOOKMARKS])
    check(await old_client.login(a.host, a.port), "alice logs in an old client that follows storage:bookmarks")
    storage = await storage_event(old_client)
    check(list(conferences(storage)) == [f"dev@conference.{d}"]
          and storage.find("{storage:bookmarks}url") is not None,
          f"and it gets the bookmarks as the node's last item: {conferences(storage)}")
    ids, storage = old_pep(await alice.plugin["xep_0060"].get_items(f"alice@{d}", OLD_BOOKMARKS))
    check(ids == ["current"] and conferences(storage) == {f"dev@conference.{d}": ("Dev", "alice", False)}
          and storage.find("{storage:bookmarks}url").get("url") == "https://example.org/docs",
          f"reading storage:bookmarks over PEP gives item current with the same view as private XML: {ids}")

    # Publishing storage to the PEP node, as XEP-0048 §3.1 says, replaces the XEP-0402 items.
    while not alice.events.empty():
        alice.events.get_nowait()
    storage = ET.fromstring(
        "<storage xmlns='storage:bookmarks'>"
        f"<conference jid='old@conference.{d}' name='Old' autojoin='true'><nick>ally</nick>"
        "<password>sesame</password></conference>"
        "<url name='Wiki' url='https://example.org/wiki'/></storage>")
    res = await old_client.plugin["xep_0060"].publish(
        f"alice@{d}", OLD_BOOKMARKS, id="current", payload=storage,
        options=options(persist_items="true", access_model="whitelist"))
    check(res["pubsub"]["publish"]["item"]["id"] == "current", "alice publishes storage:bookmarks over PEP")
    items = await alice.plugin["xep_0060"].get_items(f"alice@{d}", BOOKMARKS)
    ids = [i["id"] for i in items["pubsub"]["items"]]
    new = items["pubsub"]["items"]["item"]["payload"]
    check(ids == [f"old@conference.{d}"] and new.get("name") == "Old" and new.get("autojoin") == "true"
          and new.find(f"{{{BOOKMARKS}}}nick").text == "ally" and new.find(f"{{{BOOKMARKS}}}password").text == "sesame",
          f"its conferences are now the XEP-0402 items: {ids}")
    check(await two_kinds(alice) == {"publish", "retract"}, "and sessions following XEP-0402 hear of the change")
    storage = await storage_event(old_client)
    check(list(conferences(storage)) == [f"old@conference.{d}"], "as does the old client, from storage:bookmarks")
    ids, storage = old_pep(await alice.plugin["xep_0060"].get_items(f"alice@{d}", OLD_BOOKMARKS))
    check(ids == ["current"] and conferences(storage) == {f"old@conference.{d}": ("Old", "ally", "sesame")},
          f"and the node reads back what was published: {conferences(storage)}")
    got = (await private(alice)).xml.find("{jabber:iq:private}query/{storage:bookmarks}storage")
    check(conferences(got) == {f"old@conference.{d}": ("Old", "ally", "sesame")}
          and [u.get("url") for u in got.findall("{storage:bookmarks}url")] == ["https://example.org/wiki"],
          f"private XML shows the same bookmarks, the URL replaced: {conferences(got)}")

    # A bookmark added through XEP-0402 shows in the storage:bookmarks node, and the old client
    # hears of it; so does one removed.
    conference = ET.fromstring(f"<conference xmlns='{BOOKMARKS}' name='New' autojoin='false'><nick>al2</nick></conference>")
    await alice.plugin["xep_0060"].publish(f"alice@{d}", BOOKMARKS, id=f"new@conference.{d}", payload=conference,
                                           options=options(access_model="whitelist", max_items="max"))
    storage = await storage_event(old_client)
    check(set(conferences(storage)) == {f"old@conference.{d}", f"new@conference.{d}"},
          f"the old client is notified of a bookmark added through XEP-0402: {conferences(storage)}")
    ids, storage = old_pep(await old_client.plugin["xep_0060"].get_items(f"alice@{d}", OLD_BOOKMARKS))
    check(ids == ["current"] and conferences(storage).get(f"new@conference.{d}") == ("New", "al2", False)
          and f"old@conference.{d}" in conferences(storage),
          f"and reads it back through storage:bookmarks: {conferences(storage)}")
    await alice.plugin["xep_0060"].retract(f"alice@{d}", BOOKMARKS, f"old@conference.{d}", notify=True)
    storage = await storage_event(old_client)
    check(list(conferences(storage)) == [f"new@conference.{d}"], "a bookmark retracted through XEP-0402 leaves it")
    await private(alice, ET.fromstring(
        f"<storage xmlns='storage:bookmarks'><conference jid='priv@conference.{d}' name='Priv'/></storage>"))
    storage = await storage_event(old_client)
    check(list(conferences(storage)) == [f"priv@conference.{d}"],
          f"a change through private XML reaches the old client too: {conferences(storage)}")

    # The node is alice's alone, even to a contact.
    got = await iq_condition(bob.plugin["xep_0060"].get_items(f"alice@{d}", OLD_BOOKMARKS))
    check(got == "not-allowed", f"bob, though subscribed to alice, may not read her storage:bookmarks ({got})")
    got = await iq_condition(bob.plugin["xep_0060"].publish(f"alice@{d}", OLD_BOOKMARKS, payload=storage))
    check(got == "forbidden", f"nor publish to it ({got})")

    # What is not a storage:bookmarks element is refused, and nothing changes.
    async def pubsub_error(request):
        """The condition and the XEP-0060 application condition an IQ request gets back."""
        try:
            await request
            return "a result"
        except slixmpp.exceptions.IqError as e:
            app = [c.tag.split("}")[1] for c in e.iq.xml.find("{jabber:client}error")
                   if c.tag.startswith("{http://jabber.org/protocol/pubsub#errors}")]
            return e.iq["error"]["condition"], app
    for bad, what in ((payload("not bookmarks"), "another element"),
                      (ET.fromstring("<storage xmlns='storage:bookmarks'><conference name='No JID'/></storage>"),
                       "a conference without a room JID")):
        got = await pubsub_error(old_client.plugin["xep_0060"].publish(f"alice@{d}", OLD_BOOKMARKS, id="current", payload=bad))
        check(got == ("bad-request", ["invalid-payload"]), f"publishing {what} to storage:bookmarks: bad-request ({got})")
    got = await pubsub_error(old_client.plugin["xep_0060"].publish(
        f"alice@{d}", OLD_BOOKMARKS, payload=storage, options=options(access_model="open")))
    check(got == ("conflict", ["precondition-not-met"]), f"publish-options that would open it up are refused ({got})")
    items = await alice.plugin["xep_0060"].get_items(f"alice@{d}", BOOKMARKS)
    check([i["id"] for i in items["pubsub"]["items"]] == [f"priv@conference.{d}"], "the refused publishes changed nothing")

    # Private storage of any other namespace: kept, and only for its owner.
    await private(alice, ET.fromstring("<prefs xmlns='urn:example:prefs'><colour>teal</colour></prefs>"))
    got = await private(alice, ns="urn:example:prefs", name="prefs")
    check(got.xml.find("{jabber:iq:private}query/{urn:example:prefs}prefs/{urn:example:prefs}colour").text == "teal",
          "private XML storage keeps what it was given")
    iq = bob.make_iq_get(ito=f"alice@{d}")
    query = ET.Element("{jabber:iq:private}query")
    query.append(ET.Element("{urn:example:prefs}prefs"))
    iq.append(query)
    got = await iq_condition(iq.send(timeout=10))
    check(got == "forbidden", f"and nobody else may read it ({got})")

    # Only the owner publishes, and deletion ends the node.
    got = await iq_condition(bob.plugin["xep_0060"].publish(f"alice@{d}", TEST, payload=payload("not mine")))
    check(got == "forbidden", f"bob cannot publish to alice's node ({got})")
    await alice.plugin["xep_0060"].delete_node(f"alice@{d}", TEST)
    got = await iq_condition(bob.plugin["xep_0060"].get_items(f"alice@{d}", TEST))
    check(got == "item-not-found", f"a deleted node is gone ({got})")

    for c in (alice, bob, bob2, carol, old_client):
        c.disconnect()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    p = server_args()
    asyncio.run(main(p.parse_args()))
