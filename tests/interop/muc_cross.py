"""Interop: one room, two protocols. matrix-nio and slixmpp clients in the same rooms on Estuary.

alice uses Matrix (matrix-nio); bob and carol use XMPP (slixmpp, XEP-0045). Covers: disco of
the MUC service (listed by the server, its rooms), joining a Matrix room by its alias JID and
by its ID JID, the join sequence (occupants with affiliation and role, self-presence 110,
history with delay and stanza-id, subject), a groupchat message reflected with its id and
origin-id and seen by Matrix, a Matrix message seen by XMPP (stanza-id = event ID), an
encrypted Matrix message shown as a notice, a room created from XMPP (201) and joined from
Matrix, subject <-> topic both ways, nick change <-> display name (303), kick from Matrix
(307), leave from XMPP <-> Matrix leave, self-ping (XEP-0410), and the errors: unknown room,
invite-only room, nick in use, a message from a non-member. Prints ALL OK on success.
"""

import asyncio

import slixmpp
from slixmpp import JID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXMLMask
from slixmpp.exceptions import PresenceError
from nio import RoomCreateResponse, RoomMessagesResponse, RoomSendResponse
from nio.api import RoomPreset, RoomVisibility

from checks import check, eventually, iq_condition, scram_client, until
from matrix_side import ephemeral, matrix_event, matrix_login, member_of, read_by, typing, run_cross

MUC = "conference.localhost"
SID = "urn:xmpp:sid:0"


class Xmpp(scram_client(slixmpp.ClientXMPP)):
    def __init__(self, jid, password):
        super().__init__(jid, password, (
            "xep_0004", "xep_0030", "xep_0045", "xep_0059", "xep_0085", "xep_0199", "xep_0308", "xep_0313",
            "xep_0359", "xep_0249", "xep_0410", "xep_0424", "xep_0425", "xep_0444", "xep_0461", "xep_0333"))
        self.messages = []
        self.presences = []
        self.subjects = []
        self.invites = []
        self.add_event_handler("groupchat_direct_invite", self.invites.append)
        self.add_event_handler("groupchat_message", self.messages.append)
        self.add_event_handler("groupchat_presence", self.presences.append)
        self.add_event_handler("groupchat_subject", self.subjects.append)
        # Every groupchat message, with a body or not (reactions, retractions).
        self.all = []
        self.register_handler(Callback("all-groupchat", MatchXMLMask("<message xmlns='jabber:client' type='groupchat'/>"),
                                       self.all.append))

    def bodies(self, room):
        return [m["body"] for m in self.messages if m["from"].bare == room and m["body"]]


def room_id_jid(room_id):
    """The ID form of a room's JID (docs: MUC room JIDs)."""
    local = room_id[1:].split(":")[0]
    out = "".join("^" + c.lower() if c.isupper() else ("^^" if c == "^" else c) for c in local)
    return f"!{out}@{MUC}"


def statuses(pres):
    return {int(s) for s in pres["muc"]["status_codes"]}


async def matrix_bodies(client, room_id):
    r = await client.room_messages(room_id, start="", limit=100)
    check(isinstance(r, RoomMessagesResponse), "/messages")
    return [(e.sender, e.body) for e in reversed(r.chunk) if getattr(e, "body", None) is not None]


async def main(a):
    hs = a.homeserver
    alice = await matrix_login(hs, "alice")
    await alice.set_displayname("Alice")

    # A public room with an alias, a topic and some history, made over Matrix.
    r = await alice.room_create(
        alias="lobby", name="The Lobby", topic="Lobby topic", preset=RoomPreset.public_chat,
        visibility=RoomVisibility.public,
    )
    check(isinstance(r, RoomCreateResponse), "alice creates #lobby")
    lobby_id = r.room_id
    for i in range(3):
        r = await alice.room_send(lobby_id, "m.room.message", {"msgtype": "m.text", "body": f"m{i}"})
        check(isinstance(r, RoomSendResponse), f"alice sends m{i}")
    r = await alice.room_send(
        lobby_id, "m.room.encrypted",
        {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn", "sender_key": "k", "session_id": "s", "device_id": "D"},
    )
    check(isinstance(r, RoomSendResponse), "alice sends a Megolm-encrypted event")
    encrypted_event = r.event_id

    bob = Xmpp("bob@localhost/phone", "pw")
    carol = Xmpp("carol@localhost/laptop", "pw")
    await bob.login(a.port)
    await carol.login(a.port)
    muc = bob.plugin["xep_0045"]

    # Disco: the server lists its MUC service; the service lists the public rooms.
    items = await bob.plugin["xep_0030"].get_items(jid="localhost")
    check(MUC in [i[0] for i in items["disco_items"]["items"]], "the server's disco#items lists the MUC service")
    info = await bob.plugin["xep_0030"].get_info(jid=MUC)
    check(("conference", "text") in [(i[0], i[1]) for i in info["disco_info"]["identities"]], "the service is conference/text")
    check("http://jabber.org/protocol/muc" in info["disco_info"]["features"], "the service offers MUC")
    items = await bob.plugin["xep_0030"].get_items(jid=MUC)
    check(f"lobby@{MUC}" in [i[0] for i in items["disco_items"]["items"]], "the service lists #lobby as lobby@")
    info = await bob.plugin["xep_0030"].get_info(jid=f"lobby@{MUC}")
    features = info["disco_info"]["features"]
    check("muc_open" in features and "muc_public" in features and "muc_nonanonymous" in features,
          f"room disco#info features: {features}")
    check([i[3] for i in info["disco_info"]["identities"]] == ["The Lobby"], "the room's name is its Matrix name")

    # bob joins: occupants, own presence, history, subject.
    lobby = f"lobby@{MUC}"
    pres, subject, occupants, history = await muc.join_muc_wait(lobby, "Bob", maxstanzas=10, timeout=20)
    check({110, 100} <= statuses(pres), f"bob's self-presence has 110 and 100: {statuses(pres)}")
    check(pres["muc"]["affiliation"] == "member" and pres["muc"]["role"] == "participant", "bob is a participant member")
    alice_pres = [p for p in occupants if p["from"].resource == "Alice"]
    check(len(alice_pres) == 1, f"alice (Matrix) is an occupant: {[str(p['from']) for p in occupants]}")
    check(alice_pres[0]["muc"]["affiliation"] == "owner" and alice_pres[0]["muc"]["role"] == "moderator",
          "alice, power level 100, is owner and moderator")
    check(str(alice_pres[0]["muc"]["jid"].bare) == "alice@localhost", "occupants' real JIDs are shown")
    check(alice_pres[0].xml.find("{urn:xmpp:occupant-id:0}occupant-id") is not None, "presence carries occupant-id")
    check([m["body"] for m in history][:3] == ["m0", "m1", "m2"], f"history: {[m['body'] for m in history]}")
    check("end-to-end encrypted" in history[3]["body"], "an encrypted Matrix message shows as a notice")
    check(history[3]["stanza_id"]["id"] == encrypted_event, "history carries stanza-ids = event IDs")
    check(all(m["delay"]["stamp"] is not None for m in history), "history is delayed")
    check(subject["subject"] == "Lobby topic", "the subject is the Matrix topic: the join sequence is complete")
    member = await member_of(alice, lobby_id, "@bob:localhost")
    check(member.get("membership") == "join" and member.get("displayname") == "Bob",
          f"bob is a member over Matrix with his nick as display name: {member}")

    # XMPP -> Matrix, reflected with its ids.
    msg = bob.make_message(mto=lobby, mbody="hello from xmpp", mtype="groupchat")
    msg["id"] = "bob-msg-1"
    msg["origin_id"]["id"] = "bob-origin-1"
    msg.send()
    await until(lambda: "hello from xmpp" in bob.bodies(lobby), "bob's message is reflected to him")
    reflected = [m for m in bob.messages if m["body"] == "hello from xmpp"][0]
    check(reflected["id"] == "bob-msg-1" and reflected["origin_id"]["id"] == "bob-origin-1",
          "the reflection keeps the id and origin-id")
    check(reflected["from"].resource == "Bob", "from bob's occupant JID")
    stanza_id = reflected["stanza_id"]["id"]
    check(stanza_id.startswith("$") and reflected["stanza_id"]["by"] == lobby, "with a stanza-id by the room")
    bodies = await matrix_bodies(alice, lobby_id)
    check(bodies[-1] == ("@bob:localhost", "hello from xmpp"), f"alice sees bob's message over Matrix: {bodies[-1]}")
    r = await alice.room_get_event(lobby_id, stanza_id)
    check(getattr(r, "event", None) is not None and r.event.body == "hello from xmpp", "the stanza-id is the event ID")

    # Matrix -> XMPP.
    r = await alice.room_send(lobby_id, "m.room.message", {"msgtype": "m.text", "body": "hi bob"})
    hi_event = r.event_id
    await until(lambda: "hi bob" in bob.bodies(lobby), "bob gets alice's Matrix message")
    got = [m for m in bob.messages if m["body"] == "hi bob"][0]
    check(got["from"].resource == "Alice" and got["stanza_id"]["id"] == r.event_id, "from alice's nick, stanza-id = event ID")
    await alice.room_send(lobby_id, "m.room.message", {"msgtype": "m.emote", "body": "waves"})
    await until(lambda: "/me waves" in bob.bodies(lobby), "an m.emote is a /me message")

    # MAM over the room: the timeline itself, paged, under the ids the live messages carried.
    mam = bob.plugin["xep_0313"]
    archived = [m async for m in mam.iterate(jid=JID(lobby), rsm={"max": 2})]
    bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in archived]
    check(bodies[:3] == ["m0", "m1", "m2"] and "end-to-end encrypted" in bodies[3]
          and bodies[4:] == ["hello from xmpp", "hi bob", "/me waves"], f"MAM pages through the room's messages: {bodies}")
    ids = [m["mam_result"]["id"] for m in archived]
    check(ids[4] == stanza_id and ids[3] == encrypted_event, "archive ids are the stanza-ids (event IDs)")
    check(archived[5]["mam_result"]["forwarded"]["stanza"]["from"].resource == "Alice"
          and archived[5]["mam_result"]["forwarded"]["delay"]["stamp"] is not None, "from the sender's nick, with a delay")
    newest = [m["mam_result"]["forwarded"]["stanza"]["body"]
              async for m in mam.iterate(jid=JID(lobby), rsm={"max": 2}, reverse=True, total=3)]
    check(newest == ["/me waves", "hi bob", "hello from xmpp"], f"and backwards from the newest: {newest}")
    only_bob = [m["mam_result"]["forwarded"]["stanza"]["body"]
                async for m in mam.iterate(jid=JID(lobby), with_jid=JID(f"{lobby}/Bob"), rsm={"max": 10})]
    check(only_bob == ["hello from xmpp"], f"filtered by occupant: {only_bob}")

    # Edits, replies, reactions, retractions and typing, both ways.
    def relation(ev):
        return ev["content"].get("m.relates_to", {})

    bob.plugin["xep_0308"].build_correction("bob-msg-1", JID(lobby), mtype="groupchat", mbody="hello, edited").send()
    edit = await matrix_event(alice, lobby_id, lambda ev: relation(ev).get("rel_type") == "m.replace", "bob's correction reaches Matrix")
    check(edit["content"]["m.new_content"]["body"] == "hello, edited" and relation(edit)["event_id"] == stanza_id,
          "an XMPP correction (by the client's own id) is an m.replace of the original event")
    await alice.room_send(lobby_id, "m.room.message", {
        "msgtype": "m.text", "body": "* hi bob!", "m.new_content": {"msgtype": "m.text", "body": "hi bob!"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": hi_event}})
    await until(lambda: any(m["body"] == "hi bob!" and m["replace"]["id"] == hi_event for m in bob.messages),
                "a Matrix edit is a XEP-0308 correction of the event ID bob saw")

    bob.plugin["xep_0461"].send_reply(f"{lobby}/Alice", hi_event, mto=JID(lobby), mbody="a reply", mtype="groupchat")
    reply = await matrix_event(alice, lobby_id, lambda ev: ev["content"].get("body") == "a reply", "bob's reply reaches Matrix")
    check(relation(reply).get("m.in_reply_to", {}).get("event_id") == hi_event, "an XMPP reply is m.in_reply_to")
    r = await alice.room_send(lobby_id, "m.room.message", {
        "msgtype": "m.text", "body": "> <@bob:localhost> a reply\n\nback at you",
        "m.relates_to": {"m.in_reply_to": {"event_id": reply["event_id"]}}})
    await until(lambda: any(m["body"] == "back at you" and m["reply"]["id"] == reply["event_id"] for m in bob.messages),
                "a Matrix reply is a XEP-0461 reply, without the quoted fallback")

    reacting = bob.make_message(mto=JID(lobby), mtype="groupchat")
    bob.plugin["xep_0444"].set_reactions(reacting, hi_event, ["👍", "🎉"])
    reacting.send()
    await matrix_event(alice, lobby_id, lambda ev: ev["type"] == "m.reaction" and relation(ev).get("key") == "🎉",
                       "bob's reactions reach Matrix")
    r = await alice.room_messages(lobby_id, start="", limit=30)
    keys = sorted(relation(e.source)["key"] for e in r.chunk
                  if e.source["type"] == "m.reaction" and e.source["sender"] == "@bob:localhost")
    check(keys == ["🎉", "👍"], f"as one m.annotation per reaction: {keys}")
    r = await alice.room_send(lobby_id, "m.reaction", {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": stanza_id, "key": "❤"}})
    alice_heart = r.event_id
    await until(lambda: any(m["reactions"]["id"] == stanza_id and m["reactions"].get_values() == {"❤"}
                            and m["from"].resource == "Alice" for m in bob.all),
                "a Matrix reaction is a XEP-0444 reaction")
    await alice.room_redact(lobby_id, alice_heart)
    await until(lambda: any(m["reactions"]["id"] == stanza_id and m["reactions"].get_values() == set()
                            and m["from"].resource == "Alice" for m in bob.all),
                "a redacted Matrix reaction leaves an empty reaction set")

    bob.plugin["xep_0424"].send_retraction(JID(lobby), stanza_id, mtype="groupchat")
    await matrix_event(alice, lobby_id, lambda ev: ev["type"] == "m.room.redaction" and ev.get("redacts", ev["content"].get("redacts")) == stanza_id,
                       "an XMPP retraction is a redaction")
    r = await alice.room_get_event(lobby_id, stanza_id)
    check(getattr(r, "event", None) is not None and not r.event.source["content"], "and the message is redacted")
    await until(lambda: any(m["retract"]["id"] == stanza_id for m in bob.all), "bob sees his retraction")
    r = await alice.room_send(lobby_id, "m.room.message", {"msgtype": "m.text", "body": "to be moderated"})
    doomed = r.event_id
    await until(lambda: "to be moderated" in bob.bodies(lobby), "bob gets the doomed message")
    await alice.room_redact(lobby_id, doomed, reason="spam")
    await until(lambda: any(m["retract"]["id"] == doomed for m in bob.all), "a Matrix redaction is a retraction")
    r = await alice.room_send(lobby_id, "m.room.message", {"msgtype": "m.text", "body": "not bob's to moderate"})
    check(await iq_condition(bob.plugin["xep_0425"].moderate(JID(lobby), r.event_id, "no")) == "forbidden",
          "a participant may not moderate someone else's message (XEP-0425)")

    composing = bob.make_message(mto=JID(lobby), mtype="groupchat")
    composing["chat_state"] = "composing"
    composing.send()
    await ephemeral(alice, lobby_id, typing("@bob:localhost"), "an XMPP chat state 'composing' is Matrix typing")
    await until(lambda: any(m["from"] == JID(f"{lobby}/Bob") and m["chat_state"] == "composing" for m in bob.all),
                "and the room's occupants get bob's chat state (his own sessions too)")
    await alice.room_typing(lobby_id, True, 10_000)
    await until(lambda: any(m["from"] == JID(f"{lobby}/Alice") and m["chat_state"] == "composing" for m in bob.all),
                "Matrix typing is a chat state 'composing' from the occupant")
    await alice.room_read_markers(lobby_id, doomed_not := r.event_id, doomed_not)
    await until(lambda: any(m["from"] == JID(f"{lobby}/Alice") and m["displayed"]["id"] == doomed_not for m in bob.all),
                "a Matrix read receipt is a XEP-0333 displayed marker of the event ID")
    marker = bob.make_message(mto=JID(lobby), mtype="groupchat")
    marker["displayed"]["id"] = doomed_not
    marker.send()
    await ephemeral(alice, lobby_id, read_by("@bob:localhost", doomed_not),
                    "an XMPP displayed marker is bob's Matrix read receipt")

    # The topic, both ways.
    await alice.room_put_state(lobby_id, "m.room.topic", {"topic": "New topic"})
    await until(lambda: any(m["subject"] == "New topic" for m in bob.subjects), "a Matrix topic change is a subject")
    bob_errors = []
    bob.add_event_handler("groupchat_message_error", bob_errors.append)
    muc.set_subject(lobby, "Subject from XMPP")
    await until(lambda: bob_errors, "a participant may not change the subject")
    check(bob_errors[0]["error"]["condition"] == "forbidden", f"forbidden: {bob_errors[0]['error']['condition']}")

    # carol: errors first, then the room by its ID form.
    try:
        await carol.plugin["xep_0045"].join_muc_wait(f"!nosuchroom@{MUC}", "Carol", timeout=10)
        check(False, "joining an unknown room fails")
    except PresenceError as e:
        check(e.condition == "item-not-found", f"an unknown room is item-not-found: {e.condition}")
    try:
        await carol.plugin["xep_0045"].join_muc_wait(lobby, "Bob", timeout=10)
        check(False, "a nick in use is refused")
    except PresenceError as e:
        check(e.condition == "conflict", f"a nick in use is a conflict: {e.condition}")
    r = await alice.room_create(preset=RoomPreset.private_chat, name="secret", initial_state=[
        {"type": "m.room.encryption", "state_key": "", "content": {}}])
    secret_id = r.room_id
    try:
        await carol.plugin["xep_0045"].join_muc_wait(room_id_jid(secret_id), "Carol", timeout=10)
        check(False, "an invite-only room is refused")
    except PresenceError as e:
        check(e.condition == "registration-required", f"an invite-only room is registration-required: {e.condition}")
    errors = asyncio.get_event_loop().create_future()
    carol.add_event_handler("groupchat_message_error", lambda m: errors.done() or errors.set_result(m))
    carol.make_message(mto=lobby, mbody="not a member", mtype="groupchat").send()
    err = await asyncio.wait_for(errors, 10)
    check(err["error"]["condition"] == "not-acceptable", f"a non-member's message is not-acceptable: {err['error']['condition']}")
    check(await iq_condition(carol.plugin["xep_0313"].retrieve(jid=JID(secret_id and room_id_jid(secret_id)))) == "forbidden",
          "a non-member may not read a room's archive")
    check(await iq_condition(carol.plugin["xep_0199"].ping(jid=f"{lobby}/Carol", timeout=10)) == "not-acceptable",
          "self-ping of a non-occupant is not-acceptable")
    check(await iq_condition(bob.plugin["xep_0199"].ping(jid=f"{lobby}/Bob", timeout=10)) == "a result",
          "self-ping of an occupant is answered")

    lobby_by_id = room_id_jid(lobby_id)
    cmuc = carol.plugin["xep_0045"]
    pres, _, occupants, _ = await cmuc.join_muc_wait(lobby_by_id, "Carol", maxstanzas=0, timeout=20)
    check(110 in statuses(pres) and str(pres["from"].bare) == lobby_by_id, "carol joins #lobby by its ID JID")
    check({"Alice", "Bob"} <= {p["from"].resource for p in occupants}, "and sees alice and bob")
    await until(lambda: any(p["from"].resource == "Carol" and p["type"] != "unavailable" for p in bob.presences
                            if p["from"].bare == lobby), "bob sees carol come in")

    # Nick change = display name change (303).
    await muc.set_self_nick(lobby, "Bobby", timeout=10)
    await until(lambda: any(p["from"].resource == "Bob" and 303 in statuses(p) for p in carol.presences),
                "carol sees bob's nick change (303)")
    check(any(p["muc"]["item_nick"] == "Bobby" for p in carol.presences if 303 in statuses(p)), "to Bobby")
    member = await member_of(alice, lobby_id, "@bob:localhost")
    check(member.get("displayname") == "Bobby", f"bob's display name in the room is now Bobby: {member}")

    # Kick from Matrix (307).
    await alice.room_kick(lobby_id, "@carol:localhost", reason="bye")
    await until(lambda: any(p["type"] == "unavailable" and {110, 307} <= statuses(p) for p in carol.presences),
                "carol is told she was kicked (110, 307)")
    await until(lambda: any(p["from"].resource == "Carol" and 307 in statuses(p) for p in bob.presences),
                "bob sees carol kicked")

    # A room created from XMPP, joined from Matrix.
    pres, _, _, _ = await cmuc.join_muc_wait(f"newroom@{MUC}", "Carol", timeout=20)
    check(201 in statuses(pres) and pres["muc"]["affiliation"] == "owner", "carol creates newroom (201) as owner")
    await cmuc.set_room_config(f"newroom@{MUC}", carol.plugin["xep_0004"].make_form(ftype="submit"))
    r = await alice.join("#newroom:localhost")
    check(getattr(r, "room_id", None), "alice joins #newroom:localhost over Matrix")
    newroom_id = r.room_id
    await until(lambda: any(p["from"] == f"newroom@{MUC}/Alice" for p in carol.presences), "carol sees alice join")
    await alice.room_send(newroom_id, "m.room.message", {"msgtype": "m.text", "body": "hello newroom"})
    await until(lambda: "hello newroom" in carol.bodies(f"newroom@{MUC}"), "carol gets alice's message in newroom")
    cmuc.set_subject(f"newroom@{MUC}", "Subject from XMPP")

    async def topic():
        r = await alice.room_get_state_event(newroom_id, "m.room.topic")
        return getattr(r, "content", {}).get("topic")

    async def topic_is(text):
        return await topic() == text
    await eventually(lambda: topic_is("Subject from XMPP"), "the owner's subject change from XMPP is the Matrix topic")

    # Owner configuration (muc#owner) and administration (muc#admin) from XMPP.
    newroom = f"newroom@{MUC}"
    form = await cmuc.get_room_config(newroom)
    values = form.get_values()
    check(values["muc#roomconfig_membersonly"] is False and values["muc#roomconfig_publicroom"] is True,
          f"the configuration form shows an open, listed room: {values}")
    check(await iq_condition(muc.get_room_config(newroom)) == "forbidden", "only owners get the configuration form")
    submit = bob.plugin["xep_0004"].make_form(ftype="submit")
    submit.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
    submit.add_field(var="muc#roomconfig_roomname", value="New Room")
    submit.add_field(var="muc#roomconfig_membersonly", ftype="boolean", value=True)
    submit.add_field(var="muc#roomconfig_publicroom", ftype="boolean", value=False)
    await cmuc.set_room_config(newroom, submit)
    r = await alice.room_get_state_event(newroom_id, "m.room.join_rules")
    check(getattr(r, "content", {}).get("join_rule") == "invite", "members-only is the invite join rule")
    r = await alice.room_get_state_event(newroom_id, "m.room.name")
    check(getattr(r, "content", {}).get("name") == "New Room", "the room name is the Matrix name")
    items = await bob.plugin["xep_0030"].get_items(jid=MUC)
    check(newroom not in [i[0] for i in items["disco_items"]["items"]], "an unlisted room leaves the service's items")
    try:
        await muc.join_muc_wait(newroom, "Bob", timeout=10)
        check(False, "bob may not join a members-only room")
    except PresenceError as e:
        check(e.condition == "registration-required", f"not yet a member: {e.condition}")
    await cmuc.set_affiliation(newroom, "member", jid="bob@localhost")
    member = await member_of(alice, newroom_id, "@bob:localhost")
    check(member.get("membership") == "invite", f"the member affiliation is a Matrix invite: {member}")
    await cmuc.set_affiliation(newroom, "admin", jid="alice@localhost")
    r = await alice.room_get_state_event(newroom_id, "m.room.power_levels")
    check(r.content["users"].get("@alice:localhost") == 50, "the admin affiliation is power level 50")
    await until(lambda: any(p["from"] == f"{newroom}/Alice" and p["muc"]["affiliation"] == "admin" for p in carol.presences),
                "occupants see alice become admin")
    await until(lambda: any(i["groupchat_invite"]["jid"] == newroom and i["from"].bare == "carol@localhost" for i in bob.invites),
                "the Matrix invite reaches bob's XMPP session as a XEP-0249 invitation from carol")
    pres, _, _, _ = await muc.join_muc_wait(newroom, "Bob", maxstanzas=0, timeout=20)
    check(pres["muc"]["affiliation"] == "member", "the invited member joins")
    await cmuc.set_role(newroom, "Bob", "none", reason="out")
    await until(lambda: any(p["from"] == f"{newroom}/Bob" and {110, 307} <= statuses(p) for p in bob.presences),
                "a kick by nick from XMPP (307)")
    await cmuc.set_affiliation(newroom, "outcast", jid="bob@localhost", reason="banned")
    member = await member_of(alice, newroom_id, "@bob:localhost")
    check(member.get("membership") == "ban", f"outcast is a Matrix ban: {member}")
    outcasts = await cmuc.get_affiliation_list(newroom, "outcast")
    check([str(j) for j in outcasts] == ["bob@localhost"], f"the outcast list: {outcasts}")
    try:
        await muc.join_muc_wait(newroom, "Bob", timeout=10)
        check(False, "a banned user may not join")
    except PresenceError as e:
        check(e.condition == "forbidden", f"banned: {e.condition}")
    check(await iq_condition(muc.set_affiliation(newroom, "owner", jid="bob@localhost")) == "forbidden",
          "a non-member cannot change affiliations")

    # Invitations from XMPP: mediated (through the room) and direct (XEP-0249).
    third = f"third@{MUC}"
    await cmuc.join_muc_wait(third, "Carol", timeout=20)
    cmuc.invite(JID(third), JID("alice@localhost"), reason="join us")
    async def invited():
        return next(iter((await alice.sync(timeout=0)).rooms.invite), None)
    third_id = await eventually(invited, "a mediated invitation from XMPP is a Matrix invite")
    carol.plugin["xep_0249"].send_invitation(JID("bob@localhost"), JID(third), reason="come")
    await until(lambda: any(i["groupchat_invite"]["jid"] == third for i in bob.invites), "a direct invitation reaches bob")
    members = [str(j) for j in await cmuc.get_affiliation_list(JID(third), "member")]
    check("bob@localhost" in members and "alice@localhost" in members, f"and makes him invited on Matrix: {members}")

    # bob leaves from XMPP: he leaves the Matrix room.
    muc.leave_muc(lobby, "Bobby")
    async def left():
        return (await member_of(alice, lobby_id, "@bob:localhost")).get("membership") == "leave"
    await eventually(left, "bob leaving over XMPP leaves the Matrix room")

    for c in (bob, carol):
        c.disconnect()
    await alice.close()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    run_cross(main)
