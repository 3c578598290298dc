"""Helpers shared by the interop scripts: each prints one "ok - ..." line per check, and the
Rust test that runs a script looks for its final ALL OK."""

import argparse
import asyncio
import ssl


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}", flush=True)


async def until(cond, what, timeout=10):
    """Wait until cond() holds, then report it as a check."""
    deadline = asyncio.get_event_loop().time() + timeout
    while not cond():
        if asyncio.get_event_loop().time() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.05)
    print(f"ok - {what}", flush=True)


async def eventually(get, what, tries=100):
    """Call the coroutine function get() until it returns something true (at most `tries`
    times, 50 ms apart); report it as a check and return that value."""
    for _ in range(tries):
        value = await get()
        if value:
            print(f"ok - {what}", flush=True)
            return value
        await asyncio.sleep(0.05)
    check(False, what)


async def iq_condition(request):
    """The error condition an IQ request gets back, or "a result"."""
    from slixmpp.exceptions import IqError

    try:
        await request
        return "a result"
    except IqError as e:
        return e.iq["error"]["condition"]


def starttls_to_test_server(client):
    """STARTTLS only, trusting the test server's self-signed certificate."""
    client.enable_direct_tls, client.enable_starttls, client.enable_plaintext = False, True, False
    client.ssl_context.check_hostname = False
    client.ssl_context.verify_mode = ssl.CERT_NONE


def scram_client(base):
    """A slixmpp client class on `base` (slixmpp.ClientXMPP) with the plugins `plugins`, SCRAM
    over STARTTLS to the test server, and `login(port)` that waits for the session."""

    class Client(base):
        def __init__(self, jid, password, plugins=()):
            super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
            starttls_to_test_server(self)
            for p in plugins:
                self.register_plugin(p)
            self.started = asyncio.get_event_loop().create_future()
            self.add_event_handler("session_start", lambda _: self.started.done() or self.started.set_result(True))

        async def login(self, port):
            self.connect("127.0.0.1", port)
            await asyncio.wait_for(self.started, 20)
            self.send_presence()

    return Client


def server_args(port=True):
    """The command line of a script against a test server (--host, --domain, and --port unless
    the script names its ports otherwise); the script adds its own arguments."""
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    if port:
        p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    return p
