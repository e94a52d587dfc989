#!/usr/bin/env python3
"""stomp.py and Python's HTTP client against a postbus broker with TLS and JWT authentication.

Run by tests/tests/tls.rs, which makes the certificates and tokens and starts the broker, with:
  STOMP_ADDR   host:port of the TLS STOMP listener
  HTTPS_URL    base URL of the TLS HTTP listener
  CA_FILE      the CA that signed the broker's certificate
  TOKEN        a JWT the broker accepts (principal svc-orders, role producer)
  CLIENT_CERT, CLIENT_KEY   a client certificate the broker's client CA signed (CN svc-ledger)
"""

import json
import os
import queue
import ssl
import sys
import unittest
import urllib.error
import urllib.request
import uuid

import stomp

WAIT = 10
HOST, PORT = os.environ["STOMP_ADDR"].rsplit(":", 1)
PORT = int(PORT)
CA = os.environ["CA_FILE"]
TOKEN = os.environ["TOKEN"]


class Inbox(stomp.ConnectionListener):
    def __init__(self):
        self.messages = queue.Queue()
        self.errors = queue.Queue()

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)


def connection(cert=None, key=None):
    c = stomp.Connection12([(HOST, PORT)], heartbeats=(0, 0))
    if cert:
        c.set_ssl(for_hosts=[(HOST, PORT)], ca_certs=CA, cert_file=cert, key_file=key)
    else:
        c.set_ssl(for_hosts=[(HOST, PORT)], ca_certs=CA)
    inbox = Inbox()
    c.set_listener("", inbox)
    return c, inbox


class TlsJwt(unittest.TestCase):
    def test_1_send_and_receive_over_tls_with_a_token(self):
        dest = f"/queue/orders.py{uuid.uuid4().hex[:8]}"
        c, inbox = connection()
        c.connect(passcode=TOKEN, wait=True)
        self.assertTrue(c.is_connected())
        c.send(dest, "over tls", headers={"receipt": "r1"})
        # The ledger's client certificate is its identity: no token.
        w, winbox = connection(os.environ["CLIENT_CERT"], os.environ["CLIENT_KEY"])
        w.connect(wait=True)
        w.subscribe(dest, id="w", ack="auto")
        m = winbox.messages.get(timeout=WAIT)
        self.assertEqual(m.body, "over tls")
        self.assertEqual(m.headers["JMSXUserID"], "svc-orders")
        c.disconnect()
        w.disconnect()

    def test_2_no_token_no_certificate_is_refused(self):
        c, inbox = connection()
        try:
            c.connect(wait=True)
        except Exception:
            pass
        err = inbox.errors.get(timeout=WAIT)
        self.assertIn("authentication required", err.headers.get("message", ""))

    def test_3_https_with_a_bearer_token(self):
        ctx = ssl.create_default_context(cafile=CA)
        url = os.environ["HTTPS_URL"] + "/v1/queues/orders.http/messages"
        req = urllib.request.Request(
            url,
            data=json.dumps({"body": "over https"}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, context=ctx, timeout=WAIT) as r:
            self.assertEqual(r.status, 201)
            self.assertTrue(json.load(r)["message_id"].startswith("ID:"))
        bad = urllib.request.Request(url, data=b"{}", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, context=ctx, timeout=WAIT)
        self.assertEqual(e.exception.code, 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
