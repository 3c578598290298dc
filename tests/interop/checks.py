"""Helpers shared by the interop scripts: each prints one "ok - ..." line per check, and the
Rust test that runs a script looks for its final ALL OK."""

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
