"""Interop: making and running rooms from XMPP, on Matrix rooms.

carol and bob use XMPP (slixmpp, XEP-0045); alice uses Matrix (matrix-nio). Covers: a new room
is locked until its owner configures it (others get item-not-found, Matrix cannot join), a
reserved room (the form submitted) and an instant one (an empty form) open, cancelling a new
room's configuration frees its name; voice and moderator grants (§8) as power levels, the
moderator list, and not-allowed for an admin's role; private messages between occupants (§7.5),
and to a Matrix member as a 1:1 chat; a Matrix invitation made while the invitee had no XMPP
session reaches its next session, and declining it (§7.8.2) rejects the Matrix invite.
Prints ALL OK on success.
"""


from slixmpp import JID
from slixmpp.exceptions import PresenceError
from nio import JoinError, RoomCreateResponse, RoomMessagesResponse
from nio.api import RoomPreset

from checks import check, eventually, iq_condition, until
from matrix_side import matrix_login, member_of, run_cross
from muc_cross import MUC, Xmpp, room_id_jid, statuses


class Occupant(Xmpp):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.chats = []
        self.errors = []
        self.add_event_handler("message", lambda m: m["type"] in ("chat", "normal") and self.chats.append(m))
        self.add_event_handler("message_error", self.errors.append)


async def refused(join, what):
    try:
        await join
        check(False, what)
    except PresenceError as e:
        return e.condition


def submit_form(client, **fields):
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
    for var, value in fields.items():
        form.add_field(var=f"muc#roomconfig_{var}", value=value)
    return form


async def main(a):
    alice = await matrix_login(a.homeserver, "alice")
    await alice.set_displayname("Alice")
    bob = Occupant("bob@localhost/phone", "pw")
    carol = Occupant("carol@localhost/laptop", "pw")
    await bob.login(a.port)
    await carol.login(a.port)
    bmuc, cmuc = bob.plugin["xep_0045"], carol.plugin["xep_0045"]

    # A new room is locked until its owner configures it (§10.1).
    club = f"club@{MUC}"
    pres, _, _, _ = await cmuc.join_muc_wait(club, "Carol", timeout=20)
    check(201 in statuses(pres) and pres["muc"]["affiliation"] == "owner", "carol creates club (201), as owner")
    condition = await refused(bmuc.join_muc_wait(club, "Bob", timeout=10), "bob may not enter a locked room")
    check(condition == "item-not-found", f"a locked room is item-not-found to others: {condition}")
    r = await alice.join("#club:localhost")
    check(isinstance(r, JoinError), "nor can Matrix users join it")
    values = (await cmuc.get_room_config(club)).get_values()
    check(values["muc#roomconfig_membersonly"] is False and values["muc#roomconfig_publicroom"] is True,
          f"the new room's form offers an open, listed room: {values}")
    await cmuc.set_room_config(club, submit_form(carol, roomname="The Club"))
    pres, _, _, _ = await bmuc.join_muc_wait(club, "Bob", maxstanzas=0, timeout=20)
    check(110 in statuses(pres), "a reserved room opens once its form is submitted: bob joins")
    r = await alice.join("#club:localhost")
    check(getattr(r, "room_id", None), "and alice joins it over Matrix")
    club_id = r.room_id
    r = await alice.room_get_state_event(club_id, "m.room.name")
    check(getattr(r, "content", {}).get("name") == "The Club", "with the name from the form")
    items = await bob.plugin["xep_0030"].get_items(jid=MUC)
    check(club in [i[0] for i in items["disco_items"]["items"]], "and listed by default")

    quick = f"quick@{MUC}"
    await cmuc.join_muc_wait(quick, "Carol", timeout=20)
    await cmuc.set_room_config(quick, carol.plugin["xep_0004"].make_form(ftype="submit"))
    pres, _, _, _ = await bmuc.join_muc_wait(quick, "Bob", maxstanzas=0, timeout=20)
    check(110 in statuses(pres), "an instant room (an empty form) is open")

    gone = f"gone@{MUC}"
    await cmuc.join_muc_wait(gone, "Carol", timeout=20)
    await cmuc.cancel_config(gone)
    await until(lambda: any(p["from"] == JID(f"{gone}/Carol") and p["type"] == "unavailable" for p in carol.presences),
                "cancelling a new room's configuration takes its owner out")
    r = await alice.join("#gone:localhost")
    check(isinstance(r, JoinError), "and frees its name")
    pres, _, _, _ = await bmuc.join_muc_wait(gone, "Bob", timeout=20)
    check(201 in statuses(pres), "for a new room (bob makes one)")

    # Roles (§8): voice and moderator as power levels.
    def role_of(client, nick):
        return [p["muc"]["role"] for p in client.presences if p["from"] == JID(f"{club}/{nick}")][-1:]

    await cmuc.set_role(club, "Bob", "visitor")
    await until(lambda: role_of(bob, "Bob") == ["visitor"], "revoking voice makes bob a visitor")
    r = await alice.room_get_state_event(club_id, "m.room.power_levels")
    check(r.content["users"].get("@bob:localhost", 0) < r.content.get("events_default", 0)
          or r.content["users"].get("@bob:localhost", 0) < r.content.get("events", {}).get("m.room.message", 0),
          f"below the level messages need: {r.content['users']}")
    bob.make_message(mto=club, mbody="can I speak?", mtype="groupchat").send()
    await until(lambda: bob.errors, "a visitor's message is refused")
    check(bob.errors[-1]["error"]["condition"] == "forbidden", f"as forbidden: {bob.errors[-1]['error']['condition']}")
    await cmuc.set_role(club, "Bob", "participant")
    await until(lambda: role_of(bob, "Bob") == ["participant"], "granting voice makes him a participant again")
    bob.make_message(mto=club, mbody="thanks", mtype="groupchat").send()
    await until(lambda: "thanks" in carol.bodies(club), "and he speaks")
    await cmuc.set_role(club, "Bob", "moderator")
    await until(lambda: role_of(carol, "Bob") == ["moderator"], "granting moderator makes bob a moderator")
    r = await alice.room_get_state_event(club_id, "m.room.power_levels")
    check(r.content["users"].get("@bob:localhost") == r.content.get("kick", 50), "at the kick level")
    got = await cmuc.get_roles_list(club, "moderator")
    check(sorted(got) == ["Bob", "Carol"], f"the moderator list: {got}")
    check(await iq_condition(cmuc.set_role(club, "Bob", "participant")) == "not-allowed",
          "an admin's moderator role cannot be revoked (not-allowed)")

    # Private messages (§7.5).
    pm = bob.make_message(mto=f"{club}/Carol", mbody="psst carol", mtype="chat")
    pm.send()
    await until(lambda: any(m["body"] == "psst carol" for m in carol.chats), "bob's private message reaches carol")
    got = [m for m in carol.chats if m["body"] == "psst carol"][0]
    check(got["from"] == JID(f"{club}/Bob"), f"from bob's occupant JID: {got['from']}")
    check(got.xml.find("{http://jabber.org/protocol/muc#user}x") is not None, "marked with muc#user")
    carol.make_message(mto=f"{club}/Bob", mbody="hi bob", mtype="chat").send()
    await until(lambda: any(m["body"] == "hi bob" and m["from"] == JID(f"{club}/Carol") for m in bob.chats),
                "carol answers the same way")
    bob.make_message(mto=f"{club}/Nobody", mbody="?", mtype="chat").send()
    await until(lambda: len(bob.errors) > 1, "a private message to nobody is refused")
    check(bob.errors[-1]["error"]["condition"] == "item-not-found", f"item-not-found: {bob.errors[-1]['error']['condition']}")
    bob.make_message(mto=f"{club}/Carol", mbody="?", mtype="groupchat").send()
    await until(lambda: len(bob.errors) > 2, "a groupchat message to an occupant is refused")
    check(bob.errors[-1]["error"]["condition"] == "bad-request", f"bad-request: {bob.errors[-1]['error']['condition']}")
    bob.make_message(mto=f"{club}/Alice", mbody="psst alice", mtype="chat").send()
    async def invited():
        return next(iter((await alice.sync(timeout=0)).rooms.invite), None)
    dm = await eventually(invited, "a private message to a Matrix member is a DM invitation from bob")
    await alice.join(dm)
    r = await alice.room_messages(dm, start="", limit=20)
    check(isinstance(r, RoomMessagesResponse) and any(getattr(e, "body", None) == "psst alice" for e in r.chunk),
          "holding the message")

    # A Matrix invitation while bob has no XMPP session reaches his next one; he declines it.
    bob.disconnect()
    async def bob_offline():
        return getattr(await alice.get_presence("@bob:localhost"), "presence", None) == "offline"
    await eventually(bob_offline, "bob has no XMPP session left (offline on Matrix)")
    r = await alice.room_create(preset=RoomPreset.private_chat, name="Secret", invite=["@bob:localhost"])
    check(isinstance(r, RoomCreateResponse), "alice invites bob into a private room while he is offline")
    secret = room_id_jid(r.room_id)
    bob = Occupant("bob@localhost/tablet", "pw")
    await bob.login(a.port)
    await until(lambda: any(i["groupchat_invite"]["jid"] == JID(secret) for i in bob.invites),
                "bob's next session gets the invitation (XEP-0249)")
    check([i for i in bob.invites if i["groupchat_invite"]["jid"] == JID(secret)][0]["from"].bare == "alice@localhost",
          "from alice")
    bob.plugin["xep_0045"].decline(JID(secret), JID("alice@localhost"), reason="no thanks")

    r_id = r.room_id
    async def bob_left():
        return (await member_of(alice, r_id, "@bob:localhost")).get("membership") == "leave"
    await eventually(bob_left, "declining (§7.8.2) rejects the Matrix invitation")

    for c in (bob, carol):
        c.disconnect()
    await alice.close()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    run_cross(main)
