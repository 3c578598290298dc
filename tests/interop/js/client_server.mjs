// Interop: matrix-js-sdk (the library Element is built on) against a running Estuary.
// Usage: node client_server.mjs HOMESERVER_URL. Alice and bob must exist with the passwords
// below (the Rust test creates them with `estuary user create`). Both log in, run the SDK's
// own sync loop, create a room, join, and exchange messages both ways; every message must
// arrive once, in order. Prints ALL OK and exits 0 on success.
import * as sdk from "matrix-js-sdk";

const [, , baseUrl] = process.argv;
if (!baseUrl) {
  console.error("usage: node client_server.mjs HOMESERVER_URL");
  process.exit(2);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

function withDeadline(promise, ms, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)),
  ]);
}

async function login(user, password) {
  const anon = sdk.createClient({ baseUrl });
  const r = await anon.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user }, password });
  check(r.user_id === `@${user}:localhost` && r.access_token, `${user} logs in`);
  const client = sdk.createClient({ baseUrl, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id });
  const prepared = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(new Error(`${user}'s sync failed: ${data?.error}`));
    });
  });
  // The SDK's filter takes this as the timeline limit of every sync. Above the 25 messages
  // this script sends, so a sync loop held up on a busy machine gets them all: after a
  // limited sync the SDK keeps its local echoes of the skipped events unconfirmed (it does
  // not backfill), which is not what the echo check below is about.
  await client.startClient({ initialSyncLimit: 50 });
  await withDeadline(prepared, 30000, `${user}'s first sync`);
  check(true, `${user}'s sync loop is running`);
  return client;
}

/// Collect the bodies of m.room.message events in `roomId` as the client's timeline sees them.
function collect(client, roomId) {
  const bodies = [];
  client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
    if (toStartOfTimeline || room?.roomId !== roomId) return;
    if (event.getType() === "m.room.message" && event.getSender() !== client.getUserId()) {
      bodies.push(event.getContent().body);
    }
  });
  return bodies;
}

async function waitFor(cond, ms, what) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const alice = await login("alice", "alice-password");
const bob = await login("bob", "bob-password");

const { room_id: roomId } = await alice.createRoom({ name: "js-sdk room", preset: "public_chat", invite: ["@bob:localhost"] });
check(roomId.startsWith("!"), "alice creates a room and invites bob");
await waitFor(() => bob.getRoom(roomId)?.getMyMembership() === "invite", 15000, "bob sees the invite through his sync loop");
check(true, "bob sees the invite through his sync loop");
await bob.joinRoom(roomId);
await waitFor(() => alice.getRoom(roomId)?.getMember("@bob:localhost")?.membership === "join", 15000, "alice sees bob join");
check(true, "alice sees bob join");
check(alice.getRoom(roomId).name === "js-sdk room", "the room name is known to the SDK");

const atBob = collect(bob, roomId);
const atAlice = collect(alice, roomId);
for (let i = 0; i < 20; i++) {
  await alice.sendTextMessage(roomId, `from alice ${i}`);
}
for (let i = 0; i < 5; i++) {
  await bob.sendTextMessage(roomId, `from bob ${i}`);
}
await waitFor(() => atBob.length >= 20 && atAlice.length >= 5, 30000, "messages arrive through the sync loops");
check(JSON.stringify(atBob) === JSON.stringify([...Array(20).keys()].map((i) => `from alice ${i}`)), "bob receives alice's 20 messages once each, in order");
check(JSON.stringify(atAlice) === JSON.stringify([...Array(5).keys()].map((i) => `from bob ${i}`)), "alice receives bob's 5 messages once each, in order");

// The SDK's local echo is replaced by the server's event (matched by transaction ID), once
// alice's own sync has brought it back (which may come after bob's messages).
const own = () => alice.getRoom(roomId).getLiveTimeline().getEvents().filter((e) => e.getType() === "m.room.message" && e.getSender() === "@alice:localhost");
const settled = () => own().every((e) => e.getId().startsWith("$") && !e.status);
await waitFor(() => own().length >= 20 && settled(), 30000, "alice's own messages come back through her sync");
check(own().length === 20 && settled(), "alice's own messages settle as sent events, without duplicates");

alice.stopClient();
bob.stopClient();
console.log("ALL OK");
process.exit(0);
