"""Interop: one slixmpp login attempt (STARTTLS + SCRAM-SHA-256) against Estuary.

Prints "login ok" or "login refused", and ALL OK (exit 0) when that is what --expect asked for.
"""

import argparse
import asyncio
import sys

import slixmpp

from checks import starttls_to_test_server


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        starttls_to_test_server(self)
        self.outcome = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", lambda _: self.outcome.done() or self.outcome.set_result("ok"))
        self.add_event_handler("failed_auth", lambda _: self.outcome.done() or self.outcome.set_result("refused"))


async def main(a):
    c = Client(a.jid, a.password)
    c.connect(a.host, a.port)
    outcome = await asyncio.wait_for(c.outcome, 20)
    c.disconnect()
    print(f"login {outcome}", flush=True)
    if outcome == a.expect:
        print("ALL OK", flush=True)
    return outcome == a.expect


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--expect", choices=["ok", "refused"], required=True)
    sys.exit(0 if asyncio.run(main(p.parse_args())) else 1)
