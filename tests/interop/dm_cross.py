"""Interop: 1:1 chats as DM rooms. matrix-nio and slixmpp clients of the same server.

bob and carol chat over XMPP (slixmpp); the DM room of the two appears for their Matrix
clients (m.direct on both, the messages, the replier joined). alice (matrix-nio) and bob (XMPP)
chat across protocols: messages, edits, replies, reactions, redactions and typing both ways, an
encrypted Matrix message as a clear notice, sent carbons of bob's Matrix messages to his XMPP
session, and the user archive (XEP-0313) over the DM rooms with the ids the live messages
carried. An OMEMO first message makes an encrypted DM room. Prints ALL OK on success.
"""


import slixmpp
from slixmpp import JID
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXMLMask
from nio import RoomCreateResponse, RoomSendResponse
from nio.api import RoomPreset

from checks import check, eventually, scram_client, until
from matrix_side import ephemeral, events, matrix_event, matrix_login, read_by, typing, run_cross

SID = "urn:xmpp:sid:0"
OMEMO = "eu.siacs.conversations.axolotl"


class Xmpp(scram_client(slixmpp.ClientXMPP)):
    def __init__(self, jid, password):
        super().__init__(jid, password, (
            "xep_0030", "xep_0059", "xep_0085", "xep_0199", "xep_0280", "xep_0308", "xep_0313", "xep_0359",
            "xep_0333", "xep_0424", "xep_0444", "xep_0461"))
        # Every chat message (bodies or not: reactions, retractions), and sent carbons.
        self.chats = []
        self.register_handler(Callback("all-chat", MatchXMLMask("<message xmlns='jabber:client' type='chat'/>"),
                                       lambda m: m.xml.find("{urn:xmpp:carbons:2}sent") is not None or self.chats.append(m)))
        self.sent_carbons = []
        self.add_event_handler("carbon_sent", lambda m: self.sent_carbons.append(m["carbon_sent"]))

    def from_(self, bare):
        return [m for m in self.chats if m["from"].bare == bare]


async def direct_rooms(client, other):
    r = await client.list_direct_rooms()
    return getattr(r, "rooms", {}).get(other, [])


def relation(ev):
    return ev["content"].get("m.relates_to", {})


def body_is(text):
    return lambda ev: ev["type"] == "m.room.message" and ev["content"].get("body") == text


async def archive(client, with_jid=None):
    mam = client.plugin["xep_0313"]
    return [m async for m in mam.iterate(with_jid=with_jid and JID(with_jid), rsm={"max": 3})]


async def main(a):
    hs = a.homeserver
    bob = Xmpp("bob@localhost/phone", "pw")
    bob2 = Xmpp("bob@localhost/laptop", "pw")
    carol = Xmpp("carol@localhost/tablet", "pw")
    for c in (bob, bob2, carol):
        await c.login(a.port)
    await bob2.plugin["xep_0280"].enable()
    bob_m = await matrix_login(hs, "bob")
    carol_m = await matrix_login(hs, "carol")
    alice = await matrix_login(hs, "alice")

    # --- XMPP <-> XMPP: bob and carol, and their DM room.
    first = bob.make_message(mto=JID("carol@localhost"), mbody="hi carol", mtype="chat")
    first["id"] = "b1"
    first["origin_id"]["id"] = "b1-origin"
    first.send()
    await until(lambda: carol.from_("bob@localhost"), "carol gets bob's chat message")
    got = carol.from_("bob@localhost")[0]
    check(got["body"] == "hi carol" and got["id"] == "b1", "with the id bob's client gave it")
    carol_sid = got["stanza_id"]["id"]
    check(carol_sid.startswith("$") and got["stanza_id"]["by"] == "carol@localhost",
          f"and a stanza-id (the event ID) by carol's archive: {carol_sid}")
    dm = await direct_rooms(bob_m, "@carol:localhost")
    check(len(dm) == 1, f"the first message made a DM room, in bob's m.direct: {dm}")
    dm_bc = dm[0]
    check(await direct_rooms(carol_m, "@bob:localhost") == [dm_bc], "and in carol's")
    evs = await events(bob_m, dm_bc)
    check(any(e["type"] == "m.room.member" and e["state_key"] == "@carol:localhost"
              and e["content"].get("membership") == "invite" and e["content"].get("is_direct") for e in evs),
          "carol is invited to it as a DM")
    check(not any(e["type"] == "m.room.encryption" for e in evs),
          "a DM begun in plaintext over XMPP is not an encrypted room")
    first_ev = await matrix_event(bob_m, dm_bc, body_is("hi carol"), "bob's Matrix client sees his XMPP message")
    check(first_ev["event_id"] == carol_sid, "as the event carol's stanza-id names")

    carol.send_message(mto=JID("bob@localhost"), mbody="hi bob", mtype="chat")
    await until(lambda: bob.from_("carol@localhost"), "bob gets carol's answer over XMPP")
    await matrix_event(bob_m, dm_bc, lambda e: e["type"] == "m.room.member" and e["state_key"] == "@carol:localhost"
                       and e["content"].get("membership") == "join", "answering over XMPP joined carol to the DM")
    await matrix_event(bob_m, dm_bc, body_is("hi bob"), "carol's answer is in the room")

    bob.plugin["xep_0308"].build_correction("b1", JID("carol@localhost"), mtype="chat", mbody="hi carol!").send()
    await until(lambda: any(m["replace"]["id"] == "b1" and m["body"] == "hi carol!" for m in carol.chats),
                "carol gets bob's correction by his id")
    edit = await matrix_event(bob_m, dm_bc, lambda e: relation(e).get("rel_type") == "m.replace",
                              "the correction is an m.replace")
    check(relation(edit)["event_id"] == first_ev["event_id"], "of the original event")
    reacting = carol.make_message(mto=JID("bob@localhost"), mtype="chat")
    carol.plugin["xep_0444"].set_reactions(reacting, "b1", ["👋"])
    reacting.send()
    react = await matrix_event(bob_m, dm_bc, lambda e: e["type"] == "m.reaction", "carol's reaction reaches the room")
    check(relation(react)["event_id"] == first_ev["event_id"] and relation(react)["key"] == "👋",
          "a reaction to bob's message by bob's id is an annotation of its event")

    results = await archive(bob, "carol@localhost")
    bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in results]
    check(bodies[:2] == ["hi carol", "hi bob"], f"bob's archive with carol (paged by 3): {bodies}")
    r0 = results[0]["mam_result"]
    check(r0["id"] == carol_sid, "archive ids are the stanza-ids the live messages carried")
    check(r0["forwarded"]["stanza"]["id"] == "b1" and r0["forwarded"]["stanza"]["from"] == JID("bob@localhost/phone"),
          "and an XMPP message is archived with its client's id and the sending resource")
    check(r0["forwarded"]["stanza"]["origin_id"]["id"] == "b1-origin", "and its origin-id")
    check(r0["forwarded"]["delay"]["stamp"] is not None, "with the time it was sent")

    # --- Matrix <-> XMPP: alice (nio) and bob.
    r = await alice.room_create(is_direct=True, invite=["@bob:localhost"], preset=RoomPreset.trusted_private_chat)
    check(isinstance(r, RoomCreateResponse), "alice opens a DM with bob over Matrix")
    dm_ab = r.room_id
    r = await alice.room_send(dm_ab, "m.room.message", {"msgtype": "m.text", "body": "hello bob"})
    check(isinstance(r, RoomSendResponse), "alice sends bob a message")
    hello = r.event_id
    await until(lambda: alice_msgs(bob), "bob's XMPP session gets it")
    m = alice_msgs(bob)[0]
    check(m["body"] == "hello bob" and m["type"] == "chat" and m["id"] == hello,
          "as a chat message from alice@localhost with the event ID as its id")
    check(m["stanza_id"]["id"] == hello and m["stanza_id"]["by"] == "bob@localhost", "and stanza-id")
    await until(lambda: alice_msgs(bob2), "so does his other session (a message to the bare JID)")

    reply = bob.make_message(mto=JID("alice@localhost"), mbody="hello alice", mtype="chat")
    reply["id"] = "b2"
    reply.send()
    bob_ev = await matrix_event(alice, dm_ab, body_is("hello alice"), "bob's answer over XMPP reaches alice's DM")
    check(await direct_rooms(bob_m, "@alice:localhost") == [dm_ab], "answering joined bob and marked his m.direct")

    await alice.room_send(dm_ab, "m.room.message", {
        "msgtype": "m.text", "body": "* hello, bob", "m.new_content": {"msgtype": "m.text", "body": "hello, bob"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": hello}})
    await until(lambda: any(x["body"] == "hello, bob" and x["replace"]["id"] == hello for x in alice_msgs(bob)),
                "alice's edit is a XEP-0308 correction of the id bob knows")
    await alice.room_send(dm_ab, "m.reaction", {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": bob_ev["event_id"], "key": "❤"}})
    await until(lambda: any(x["reactions"]["id"] == "b2" and "❤" in x["reactions"]["values"] for x in alice_msgs(bob)),
                "alice's reaction to bob's message names it by bob's own id")
    await alice.room_send(dm_ab, "m.room.message", {
        "msgtype": "m.text", "body": "> <@bob:localhost> hello alice\n\nnice",
        "m.relates_to": {"m.in_reply_to": {"event_id": bob_ev["event_id"]}}})
    await until(lambda: any(x["body"] == "nice" and x["reply"]["id"] == "b2" for x in alice_msgs(bob)),
                "alice's reply is a XEP-0461 reply to bob's id, without the fallback")
    await alice.room_typing(dm_ab, True, 10_000)
    await until(lambda: any(x["chat_state"] == "composing" for x in alice_msgs(bob)),
                "alice typing reaches bob as a chat state 'composing'")
    r = await alice.room_send(dm_ab, "m.room.message", {"msgtype": "m.text", "body": "oops"})
    oops = r.event_id
    await until(lambda: any(x["body"] == "oops" for x in alice_msgs(bob)), "bob gets 'oops'")
    await alice.room_redact(dm_ab, oops)
    await until(lambda: any(x["retract"]["id"] == oops for x in alice_msgs(bob)),
                "alice's redaction is a XEP-0424 retraction")
    r = await alice.room_send(dm_ab, "m.room.encrypted", {
        "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn", "sender_key": "k", "session_id": "s", "device_id": "D"})
    await until(lambda: any("end-to-end encrypted" in x["body"] for x in alice_msgs(bob)),
                "an encrypted Matrix message reaches XMPP as a clear notice")

    reacting = bob.make_message(mto=JID("alice@localhost"), mtype="chat")
    bob.plugin["xep_0444"].set_reactions(reacting, hello, ["🎉"])
    reacting.send()
    react = await matrix_event(alice, dm_ab, lambda e: e["type"] == "m.reaction" and e["sender"] == "@bob:localhost",
                               "bob's reaction reaches alice")
    check(relation(react) == {"rel_type": "m.annotation", "event_id": hello, "key": "🎉"}, "as an annotation")
    bob.plugin["xep_0424"].send_retraction(JID("alice@localhost"), "b2", mtype="chat")
    await matrix_event(alice, dm_ab, lambda e: e["type"] == "m.room.redaction" and e.get("redacts") == bob_ev["event_id"],
                       "bob's retraction is a redaction of his message")
    typed = bob.make_message(mto=JID("alice@localhost"), mbody="typing next", mtype="chat")
    typed["id"] = "b3"
    typed.send()
    typed_ev = await matrix_event(alice, dm_ab, body_is("typing next"), "alice gets 'typing next'")
    await alice.room_read_markers(dm_ab, typed_ev["event_id"], typed_ev["event_id"])
    await until(lambda: any(x["displayed"]["id"] == "b3" for x in alice_msgs(bob)),
                "alice's read receipt is a XEP-0333 displayed marker of bob's own id")
    marker = bob.make_message(mto=JID("alice@localhost"), mtype="chat")
    marker["displayed"]["id"] = hello
    marker.send()
    await ephemeral(alice, dm_ab, read_by("@bob:localhost", hello), "bob's displayed marker is his Matrix read receipt")
    composing = bob.make_message(mto=JID("alice@localhost"), mtype="chat")
    composing["chat_state"] = "composing"
    composing.send()
    await ephemeral(alice, dm_ab, typing("@bob:localhost"), "bob's composing reaches alice as typing")

    r = await bob_m.room_send(dm_ab, "m.room.message", {"msgtype": "m.text", "body": "from bob's Matrix client"})
    await until(lambda: any(c["body"] == "from bob's Matrix client" for c in bob2.sent_carbons),
                "bob's message from Matrix reaches his carbons-enabled XMPP session as a sent carbon")
    check(not any(x["body"] == "from bob's Matrix client" for x in bob.chats), "and is not shown as received")

    results = await archive(bob, "alice@localhost")
    bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in results]
    check(bodies[:3] == ["hello bob", "hello, bob", "nice"],
          f"bob's archive with alice, without what was retracted: {bodies[:4]}")
    check(results[0]["mam_result"]["id"] == hello and results[0]["mam_result"]["forwarded"]["stanza"]["id"] == hello,
          "a Matrix message is archived under its event ID")
    everyone = await archive(bob)
    check(len(everyone) > len(results), "without `with`, the archive holds every DM")

    # --- An OMEMO first message makes an encrypted DM; the ciphertext is archived for XMPP.
    omemo = carol.make_message(mto=JID("alice@localhost"), mtype="chat", mbody="I sent you an OMEMO message")
    omemo.append(ET.fromstring(f"<encrypted xmlns='{OMEMO}'><header sid='1'><iv>aXY=</iv></header>"
                               "<payload>Y2lwaGVy</payload></encrypted>"))
    omemo.send()
    rooms = await eventually(lambda: direct_rooms(carol_m, "@alice:localhost"),
                             "carol's OMEMO message made a DM room with alice")
    dm_ca = rooms[0]
    evs = await events(carol_m, dm_ca)
    check(any(e["type"] == "m.room.encryption" for e in evs), "an encrypted one")
    notice = await matrix_event(carol_m, dm_ca, lambda e: e["type"] == "m.room.message", "the message is in the room")
    check(notice["content"]["msgtype"] == "m.notice" and "OMEMO" in notice["content"]["body"],
          "as a notice that it is OMEMO-encrypted for XMPP clients")
    results = await archive(carol, "alice@localhost")
    stanza = results[0]["mam_result"]["forwarded"]["stanza"]
    check(stanza.xml.find(f"{{{OMEMO}}}encrypted/{{{OMEMO}}}payload").text == "Y2lwaGVy",
          "carol's archive gives the OMEMO element back to her XMPP clients")

    for c in (bob, bob2, carol):
        c.disconnect()
    for c in (alice, bob_m, carol_m):
        await c.close()
    print("ALL OK", flush=True)


def alice_msgs(client):
    return client.from_("alice@localhost")


if __name__ == "__main__":
    run_cross(main)
