// Interop: xmpp.js (@xmpp/client, the library of many web XMPP clients) against Estuary: alice
// over XMPP-over-WebSocket (RFC 7395, found through XEP-0156 host-meta), bob over a TCP stream
// with STARTTLS; they exchange messages. Bad WebSocket frames get their stream errors.
// Usage: node xmpp_js.mjs HTTP_BASE_URL DOMAIN PASSWORD C2S_PORT. Accounts alice and bob must
// exist with that password. Prints ALL OK and exits 0 on success.
import { client, xml } from "@xmpp/client";
import WebSocket from "ws";

// Node 20 has no WebSocket of its own; xmpp.js uses the global one.
globalThis.WebSocket ??= WebSocket;

const [, , baseUrl, domain, password, c2sPort] = process.argv;
if (!c2sPort) {
  console.error("usage: node xmpp_js.mjs HTTP_BASE_URL DOMAIN PASSWORD C2S_PORT");
  process.exit(2);
}
// The test server's certificate is self-signed.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

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

// XEP-0156: both host-meta forms name the WebSocket endpoint.
const json = await (await fetch(`${baseUrl}/.well-known/host-meta.json`)).json();
const link = json.links.find((l) => l.rel === "urn:xmpp:alt-connections:websocket");
check(link && link.href.endsWith("/xmpp-websocket"), `host-meta.json names the WebSocket (${link && link.href})`);
const service = link.href;
const xrd = await (await fetch(`${baseUrl}/.well-known/host-meta`)).text();
check(xrd.includes(service), "host-meta (XRD) names the same endpoint");

async function connect(username, pass, resource, over = service) {
  const c = client({ service: over, domain, username, password: pass, resource });
  c.reconnect.stop();
  c.on("error", () => {});
  const online = new Promise((resolve) => c.once("online", resolve));
  await withDeadline(Promise.all([c.start(), online]), 15000, `${username} logs in`);
  return c;
}

// A wrong password is refused (and the connection ends).
{
  const c = client({ service, domain, username: "alice", password: "wrong password" });
  c.reconnect.stop();
  let failed = null;
  c.on("error", (e) => { failed = e; });
  try {
    await withDeadline(c.start(), 15000, "wrong password attempt");
  } catch (e) {
    failed = e;
  }
  check(failed && String(failed.condition || failed).includes("not-authorized"), `a wrong password is refused (${failed && failed.condition})`);
  await c.stop().catch(() => {});
}

const alice = await connect("alice", password, "web");
check(alice.jid.toString() === `alice@${domain}/web`, `alice is bound as ${alice.jid}`);
const bob = await connect("bob", password, "tcp", `xmpp://127.0.0.1:${c2sPort}`);
check(bob.jid.toString() === `bob@${domain}/tcp`, `bob is bound over TCP with STARTTLS as ${bob.jid}`);

// An IQ to the server: disco#info answers with the server identity.
const info = await alice.iqCaller.request(
  xml("iq", { type: "get", to: domain }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })),
);
const identity = info.getChild("query").getChild("identity");
check(identity && identity.attrs.category === "server", "disco#info of the server over WebSocket");

// Messages both ways, 50 each, complete and in order.
function collect(c, from, n) {
  const got = [];
  return new Promise((resolve) => {
    c.on("stanza", (s) => {
      if (s.is("message") && s.attrs.from && s.attrs.from.startsWith(from) && s.getChildText("body")) {
        got.push(s.getChildText("body"));
        if (got.length === n) resolve(got);
      }
    });
  });
}
await bob.send(xml("presence"));
await alice.send(xml("presence"));
const N = 50;
const atBob = collect(bob, `alice@${domain}`, N);
const atAlice = collect(alice, `bob@${domain}`, N);
for (let i = 0; i < N; i++) {
  await alice.send(xml("message", { to: `bob@${domain}/tcp`, type: "chat" }, xml("body", {}, `a${i}`)));
  await bob.send(xml("message", { to: `alice@${domain}/web`, type: "chat" }, xml("body", {}, `b${i}`)));
}
const [gotBob, gotAlice] = await withDeadline(Promise.all([atBob, atAlice]), 15000, "messages arrive");
check(gotBob.every((b, i) => b === `a${i}`), `bob got alice's ${N} messages in order`);
check(gotAlice.every((b, i) => b === `b${i}`), `alice got bob's ${N} messages in order`);

// Bad input over raw frames gets its stream error, then <close/>.
async function raw(frames) {
  const ws = new WebSocket(service, ["xmpp"]);
  const got = [];
  await new Promise((resolve, reject) => { ws.on("open", resolve); ws.on("error", reject); });
  check(ws.protocol === "xmpp", "the server selects the xmpp subprotocol");
  const closed = new Promise((resolve) => ws.on("close", resolve));
  ws.on("message", (data) => got.push(String(data)));
  for (const f of frames) ws.send(f);
  await withDeadline(closed, 10000, "the server closes the WebSocket");
  return got;
}
const OPEN = (to) => `<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="${to}" version="1.0"/>`;
let got = await raw([OPEN("elsewhere.example")]);
check(got[0].startsWith("<open") && got.some((f) => f.includes("host-unknown") && f.startsWith("<stream:error")), "another domain: host-unknown");
check(got[got.length - 1].startsWith("<close"), "then <close/>");
got = await raw([OPEN(domain), Buffer.from([1, 2, 3])]);
check(got.some((f) => f.includes("<stream:features")), "features arrive as stream:features");
check(got.some((f) => f.includes("not-well-formed")), "a binary frame: not-well-formed");
got = await raw([OPEN(domain), '<message xmlns="jabber:client"><!-- no --></message>']);
check(got.some((f) => f.includes("restricted-xml")), "a comment: restricted-xml");
got = await raw([OPEN(domain), "<a>".repeat(5000)]);
check(got.some((f) => f.includes("policy-violation")), "5,000 nested elements before auth: policy-violation");

// A clean close: <close/> both ways.
await withDeadline(alice.stop(), 10000, "alice closes");
await withDeadline(bob.stop(), 10000, "bob closes");
console.log("ALL OK");
process.exit(0);
