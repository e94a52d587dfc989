#!/usr/bin/env python3
"""Interop tests: the third-party STOMP client stomp.py against a running postbus broker.

Usage: STOMP_ADDR=127.0.0.1:61613 python3 tests/interop/test_stomp_py.py [-v] [TestName...]

The broker must allow anonymous connections and auto-create queues (the Rust test
tests/tests/interop.rs starts such a broker on a private PostgreSQL database and runs this
script). Every case uses its own queue, so the cases share one broker without interfering.

Every wait is on a threading.Condition with a timeout (STOMP_WAIT seconds, default 10), so a
broken broker fails a case instead of hanging it. "Nothing else arrives" is checked with a
marker: a message sent after the fact that must be the next one the consumer sees (queues are
FIFO at equal priority), never by sleeping and hoping.
"""

import os
import queue
import sys
import threading
import time
import unittest
import uuid

try:
    import stomp
except ImportError as e:  # pragma: no cover - depends on the machine
    print(
        f"cannot import stomp ({e}): install the client with `pip install stomp.py` "
        "(or run the README's test command, which creates tests/.venv with it)",
        file=sys.stderr,
    )
    sys.exit(2)

WAIT = float(os.environ.get("STOMP_WAIT", "10"))


def broker_address():
    addr = os.environ.get("STOMP_ADDR", "")
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        print(
            f"set STOMP_ADDR to the broker's host:port (got {addr!r})",
            file=sys.stderr,
        )
        sys.exit(2)
    return host, int(port)


ADDR = None  # set in main


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def queue_name(case):
    return f"/queue/py.{case}.q{uuid.uuid4().hex[:10]}"


def describe(frame):
    return f"{frame.cmd} {dict(frame.headers)!r} body={frame.body!r}"


class Recorder(stomp.ConnectionListener):
    """Records everything a connection receives; all state is guarded by `cond`."""

    def __init__(self, name):
        self.name = name
        self.cond = threading.Condition()
        self.connected = None
        self.messages = []
        self.taken = 0
        self.receipts = {}
        self.receipt_order = []
        self.errors = []
        self.disconnected = False
        # Called on the receiving thread after a MESSAGE is recorded (for the group case).
        self.hook = None

    def on_connected(self, frame):
        with self.cond:
            self.connected = frame
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()
        if self.hook is not None:
            self.hook(frame)

    def on_receipt(self, frame):
        with self.cond:
            rid = frame.headers.get("receipt-id")
            self.receipts[rid] = frame
            self.receipt_order.append(rid)
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def state(self):
        errors = "; ".join(describe(e) for e in self.errors) or "none"
        pending = [f.body for f in self.messages[self.taken:]]
        return (
            f"[{self.name}: errors: {errors}; unread messages: {pending!r}; "
            f"disconnected: {self.disconnected}]"
        )

    def wait(self, predicate, what, timeout=WAIT):
        """Waits for predicate() (called with the lock held) or fails naming `what`."""
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what} {self.state()}"
                )


class Client:
    """A stomp.Connection12 plus a Recorder, with waits that always time out."""

    def __init__(self, name, heartbeats=(0, 0)):
        self.name = name
        self.rec = Recorder(name)
        self.conn = stomp.Connection12(
            [ADDR],
            heartbeats=heartbeats,
            reconnect_attempts_max=1,
            timeout=WAIT,
        )
        self.conn.set_listener("recorder", self.rec)

    def connect(self, **headers):
        self.conn.connect(wait=False, headers=headers)
        r = self.rec
        r.wait(lambda: r.connected or r.errors or r.disconnected, "CONNECTED")
        if r.connected is None:
            raise AssertionError(f"{self.name}: no CONNECTED frame {r.state()}")
        return self

    # -- frames -----------------------------------------------------------------------------

    def _await_receipt(self, rid, what):
        r = self.rec
        r.wait(
            lambda: rid in r.receipts or r.errors or r.disconnected,
            f"RECEIPT {rid} for {what}",
        )
        if rid not in r.receipts:
            raise AssertionError(f"{self.name}: no RECEIPT for {what} {r.state()}")
        return r.receipts[rid]

    def send(self, dest, body, wait=True, **headers):
        """SEND with a receipt; returns the RECEIPT frame (or the receipt id if wait=False)."""
        rid = unique("send")
        headers = {k: str(v) for k, v in headers.items()}
        headers["receipt"] = rid
        self.conn.send(dest, body, headers=headers)
        if not wait:
            return rid
        return self._await_receipt(rid, f"SEND {body!r} to {dest}")

    def subscribe(self, dest, sub_id, ack, **headers):
        rid = unique("sub")
        headers = {k: str(v) for k, v in headers.items()}
        headers["receipt"] = rid
        self.conn.subscribe(dest, sub_id, ack=ack, headers=headers)
        return self._await_receipt(rid, f"SUBSCRIBE {sub_id} to {dest}")

    def ack(self, frame, transaction=None):
        rid = unique("ack")
        self.conn.ack(frame.headers["ack"], transaction=transaction, receipt=rid)
        return self._await_receipt(rid, f"ACK of {frame.body!r}")

    def nack(self, frame, transaction=None):
        rid = unique("nack")
        self.conn.nack(frame.headers["ack"], transaction=transaction, receipt=rid)
        return self._await_receipt(rid, f"NACK of {frame.body!r}")

    def begin(self, tx):
        rid = unique("begin")
        self.conn.begin(tx, headers={"receipt": rid})
        return self._await_receipt(rid, f"BEGIN {tx}")

    def commit(self, tx):
        rid = unique("commit")
        self.conn.commit(tx, headers={"receipt": rid})
        return self._await_receipt(rid, f"COMMIT {tx}")

    def abort(self, tx):
        rid = unique("abort")
        self.conn.abort(tx, headers={"receipt": rid})
        return self._await_receipt(rid, f"ABORT {tx}")

    def next_message(self, what="a MESSAGE", timeout=WAIT):
        r = self.rec
        r.wait(
            lambda: len(r.messages) > r.taken or r.errors or r.disconnected,
            what,
            timeout,
        )
        with r.cond:
            if len(r.messages) <= r.taken:
                raise AssertionError(f"{self.name}: no message ({what}) {r.state()}")
            frame = r.messages[r.taken]
            r.taken += 1
            return frame

    def disconnect(self):
        """DISCONNECT with a receipt; returns the RECEIPT frame. Fails if none comes in time."""
        rid = unique("disconnect")
        # stomp.py's disconnect(receipt=...) blocks until the socket closes, with no timeout:
        # run it on a helper thread and wait for the receipt on our own terms.
        t = threading.Thread(
            target=self.conn.disconnect, kwargs={"receipt": rid}, daemon=True
        )
        t.start()
        frame = self._await_receipt(rid, "DISCONNECT")
        t.join(WAIT)
        return frame

    def close(self):
        """Best-effort cleanup (never blocks)."""
        try:
            if self.conn.is_connected():
                self.conn.disconnect()
        except Exception:
            pass


class InteropCase(unittest.TestCase):
    def setUp(self):
        self._clients = []

    def tearDown(self):
        for c in self._clients:
            c.close()

    def client(self, name, **kw):
        c = Client(f"{self.id().rsplit('.', 1)[-1]}/{name}", **kw).connect()
        self._clients.append(c)
        return c

    def assert_header(self, frame, name, expected):
        self.assertEqual(
            frame.headers.get(name),
            expected,
            f"header {name!r} of {describe(frame)}",
        )

    def assert_next_is_marker(self, consumer, producer, dest, ack=True):
        """Sends a marker and checks it is the next message: nothing else was pending."""
        marker = unique("marker")
        producer.send(dest, marker)
        got = consumer.next_message(f"the marker {marker}")
        self.assertEqual(
            got.body,
            marker,
            f"expected nothing before the marker, got {describe(got)}",
        )
        if ack:
            consumer.ack(got)
        return got


class StompPyInterop(InteropCase):
    # (1) ----------------------------------------------------------------------------------
    def test_01_send_with_receipt_and_client_individual_ack(self):
        dest = queue_name("basic")
        p = self.client("producer")
        receipt = p.send(
            dest,
            "hello from stomp.py",
            **{"content-type": "text/plain", "x-app": "a:b\\c", "correlation-id": "corr-1"},
        )
        msg_id = receipt.headers.get("message-id")
        self.assertTrue(
            msg_id and msg_id.startswith("ID:"),
            f"RECEIPT of a SEND names the stored message-id: {describe(receipt)}",
        )

        c = self.client("consumer")
        c.subscribe(dest, "sub-1", "client-individual")
        m = c.next_message("the message")
        self.assertEqual(m.body, "hello from stomp.py")
        self.assert_header(m, "destination", dest)
        self.assert_header(m, "subscription", "sub-1")
        self.assert_header(m, "message-id", msg_id)
        self.assertTrue(m.headers.get("ack"), f"MESSAGE has an ack header: {describe(m)}")
        self.assert_header(m, "content-type", "text/plain")
        self.assert_header(m, "redelivered", "false")
        self.assert_header(m, "JMSXDeliveryCount", "1")
        self.assert_header(m, "persistent", "true")
        self.assert_header(m, "priority", "4")
        self.assert_header(m, "correlation-id", "corr-1")
        # ':' and '\' in a header value survive STOMP 1.2 escaping both ways.
        self.assert_header(m, "x-app", "a:b\\c")
        c.ack(m)
        c.disconnect()

        # Acked: a new subscriber sees nothing before a marker.
        c2 = self.client("consumer2")
        c2.subscribe(dest, "sub-2", "client-individual")
        self.assert_next_is_marker(c2, p, dest)

    # (2) ----------------------------------------------------------------------------------
    def test_02_client_ack_is_cumulative(self):
        dest = queue_name("cumulative")
        p = self.client("producer")
        for i in range(1, 6):
            p.send(dest, f"m{i}")
        c = self.client("consumer")
        c.subscribe(dest, "s", "client")
        got = [c.next_message(f"message {i}") for i in range(1, 6)]
        self.assertEqual([m.body for m in got], ["m1", "m2", "m3", "m4", "m5"])
        c.ack(got[2])  # acknowledges m1, m2 and m3
        c.disconnect()

        c2 = self.client("consumer2")
        c2.subscribe(dest, "s", "client")
        again = [c2.next_message(f"redelivery {i}") for i in (4, 5)]
        self.assertEqual([m.body for m in again], ["m4", "m5"])
        for m, first in zip(again, got[3:]):
            self.assert_header(m, "redelivered", "true")
            self.assert_header(m, "JMSXDeliveryCount", "2")
            self.assert_header(m, "message-id", first.headers["message-id"])
        # m1..m3 are gone: the marker comes right after m4 and m5 (and acks them too).
        self.assert_next_is_marker(c2, p, dest)

    # (3) ----------------------------------------------------------------------------------
    def test_03_auto_ack(self):
        dest = queue_name("auto")
        p = self.client("producer")
        c = self.client("consumer")
        c.subscribe(dest, "s", "auto")
        p.send(dest, "x")
        p.send(dest, "y")
        got = [c.next_message("x"), c.next_message("y")]
        self.assertEqual([m.body for m in got], ["x", "y"])
        for m in got:
            self.assert_header(m, "redelivered", "false")
        c.disconnect()

        c2 = self.client("consumer2")
        c2.subscribe(dest, "s", "auto")
        self.assert_next_is_marker(c2, p, dest, ack=False)

    # (4) ----------------------------------------------------------------------------------
    def test_04_nack_redelivers_with_delivery_count_2(self):
        dest = queue_name("nack")
        p = self.client("producer")
        p.send(dest, "retry me")
        c = self.client("consumer")
        c.subscribe(dest, "s", "client-individual")
        first = c.next_message("first delivery")
        self.assert_header(first, "redelivered", "false")
        self.assert_header(first, "JMSXDeliveryCount", "1")
        c.nack(first)
        again = c.next_message("redelivery after NACK")
        self.assertEqual(again.body, "retry me")
        self.assert_header(again, "message-id", first.headers["message-id"])
        self.assert_header(again, "redelivered", "true")
        self.assert_header(again, "JMSXDeliveryCount", "2")
        c.ack(again)
        self.assert_next_is_marker(c, p, dest)

    # (5) ----------------------------------------------------------------------------------
    def test_05a_transaction_abort_delivers_nothing(self):
        dest = queue_name("txabort")
        p = self.client("producer")
        c = self.client("consumer")
        c.subscribe(dest, "s", "client-individual")
        tx = unique("tx")
        p.begin(tx)
        p.send(dest, "never 1", transaction=tx)
        p.send(dest, "never 2", transaction=tx)
        p.abort(tx)
        self.assert_next_is_marker(c, p, dest)

    def test_05b_transaction_commit_delivers(self):
        dest = queue_name("txcommit")
        p = self.client("producer")
        c = self.client("consumer")
        c.subscribe(dest, "s", "client-individual")
        tx = unique("tx")
        p.begin(tx)
        p.send(dest, "t1", transaction=tx)
        p.send(dest, "t2", transaction=tx)
        # Not visible before COMMIT: a marker sent outside the transaction comes first.
        self.assert_next_is_marker(c, p, dest)
        p.commit(tx)
        got = [c.next_message("t1"), c.next_message("t2")]
        self.assertEqual([m.body for m in got], ["t1", "t2"])
        for m in got:
            self.assert_header(m, "redelivered", "false")
            c.ack(m)
        self.assert_next_is_marker(c, p, dest)

    def test_05c_ack_in_aborted_transaction_redelivers(self):
        dest = queue_name("txack")
        p = self.client("producer")
        p.send(dest, "work")
        c = self.client("consumer")
        c.subscribe(dest, "s", "client-individual")
        m = c.next_message("work")
        tx = unique("tx")
        c.begin(tx)
        c.ack(m, transaction=tx)
        c.abort(tx)
        again = c.next_message("redelivery after ABORT of the acking transaction")
        self.assertEqual(again.body, "work")
        self.assert_header(again, "message-id", m.headers["message-id"])
        self.assert_header(again, "redelivered", "true")
        self.assert_header(again, "JMSXDeliveryCount", "2")
        # An ack in a committed transaction sticks.
        tx2 = unique("tx")
        c.begin(tx2)
        c.ack(again, transaction=tx2)
        c.commit(tx2)
        self.assert_next_is_marker(c, p, dest)

    # (6) ----------------------------------------------------------------------------------
    def test_06_receipts_for_subscribe_and_disconnect(self):
        dest = queue_name("receipts")
        c = self.client("consumer")
        r = c.subscribe(dest, "s", "auto")
        self.assertEqual(r.cmd, "RECEIPT")
        # The subscription is live once its RECEIPT arrived.
        p = self.client("producer")
        p.send(dest, "after subscribe")
        self.assertEqual(c.next_message("after subscribe").body, "after subscribe")

        # DISCONNECT's RECEIPT follows the receipts of earlier frames, then the socket closes.
        send_rid = p.send(dest, "last", wait=False)
        disc = p.disconnect()
        self.assertEqual(disc.cmd, "RECEIPT")
        with p.rec.cond:
            order = list(p.rec.receipt_order)
        self.assertIn(send_rid, order, "the SEND before DISCONNECT got its RECEIPT")
        self.assertLess(
            order.index(send_rid),
            order.index(disc.headers["receipt-id"]),
            f"receipts in frame order: {order}",
        )
        p.rec.wait(lambda: p.rec.disconnected, "the broker to close after DISCONNECT")
        self.assertEqual(c.next_message("last").body, "last")
        self.assertEqual(c.disconnect().cmd, "RECEIPT")

    # (7) ----------------------------------------------------------------------------------
    def test_07_message_groups(self):
        dest = queue_name("groups")
        groups = ["ga", "gb", "gc"]
        per_group = 10
        total = len(groups) * per_group

        lock = threading.Condition()
        held = {g: {} for g in groups}  # group -> consumer -> messages held unacked
        order = {g: [] for g in groups}  # group -> JMSXGroupSeq in arrival order
        by_consumer = {}  # consumer -> [(group, seq)]
        violations = []
        acked = [0]
        failures = []

        def make_consumer(name):
            c = self.client(name)
            work = queue.Queue()
            by_consumer[name] = []

            def on_message(frame):
                g = frame.headers.get("JMSXGroupID")
                seq = frame.headers.get("JMSXGroupSeq")
                with lock:
                    if g not in held or seq is None:
                        violations.append(f"{name} got an unexpected message {describe(frame)}")
                        return
                    others = [o for o, n in held[g].items() if n > 0 and o != name]
                    if others:
                        violations.append(
                            f"{name} got {g}:{seq} while {others} still held unacked "
                            f"messages of {g} ({held[g]})"
                        )
                    held[g][name] = held[g].get(name, 0) + 1
                    order[g].append(int(seq))
                    by_consumer[name].append((g, int(seq)))
                work.put(frame)

            def worker():
                while True:
                    frame = work.get()
                    if frame is None:
                        return
                    # Hold the message a moment, as real processing would, so groups stay in
                    # flight while the other consumer is taking messages.
                    time.sleep(0.005)
                    g = frame.headers["JMSXGroupID"]
                    with lock:
                        # Released before the ACK is sent: the broker may move the group only
                        # after it has processed this ACK.
                        held[g][name] -= 1
                    try:
                        c.ack(frame)
                    except AssertionError as e:
                        with lock:
                            failures.append(str(e))
                            lock.notify_all()
                        return
                    with lock:
                        acked[0] += 1
                        lock.notify_all()

            t = threading.Thread(target=worker, daemon=True)
            t.start()
            c.rec.hook = on_message
            c.subscribe(dest, f"sub-{name}", "client-individual", **{"activemq.prefetchSize": "5"})
            return c, work

        consumers = [make_consumer("c1"), make_consumer("c2")]
        try:
            p = self.client("producer")
            last = None
            for seq in range(1, per_group + 1):
                for g in groups:
                    last = p.send(
                        dest,
                        f"{g}:{seq}",
                        wait=False,
                        JMSXGroupID=g,
                        JMSXGroupSeq=seq,
                    )
            # Receipts come in frame order: the last one means every SEND was stored.
            p._await_receipt(last, "the last SEND")
            with lock:
                done = lock.wait_for(
                    lambda: acked[0] >= total or failures or violations, WAIT * 3
                )
                snapshot = (acked[0], dict(order), dict(by_consumer), list(failures))
            self.assertFalse(violations, "a group was held by two consumers at once")
            self.assertFalse(failures, "acks failed")
            self.assertTrue(
                done,
                f"timed out: {snapshot[0]}/{total} messages acked; arrival per group "
                f"{snapshot[1]}; per consumer {snapshot[2]}",
            )
            for g in groups:
                self.assertEqual(
                    order[g],
                    list(range(1, per_group + 1)),
                    f"group {g} out of sequence order (or duplicated); per consumer {by_consumer}",
                )
            for name, seen in by_consumer.items():
                for g in groups:
                    seqs = [s for gg, s in seen if gg == g]
                    self.assertEqual(seqs, sorted(seqs), f"{name} saw {g} out of order")
            if os.environ.get("STOMP_DEBUG"):
                print(f"\ngroups: arrival per consumer {by_consumer}", file=sys.stderr)
            busy = [name for name, seen in by_consumer.items() if seen]
            self.assertEqual(
                len(busy),
                2,
                f"both consumers took part (groups are spread over consumers): {by_consumer}",
            )
        finally:
            for _, work in consumers:
                work.put(None)

    # (8) ----------------------------------------------------------------------------------
    def test_08_error_frame_for_priority_12(self):
        dest = queue_name("error")
        p = self.client("producer")
        p.send(dest, "confirmed before the error")
        rid = p.send(dest, "bad", wait=False, priority="12")
        r = p.rec
        r.wait(lambda: r.errors, "an ERROR frame for priority:12")
        err = r.errors[0]
        self.assertEqual(err.cmd, "ERROR")
        message = err.headers.get("message", "")
        self.assertIn("priority", message, f"ERROR names the header: {describe(err)}")
        self.assertIn("12", message, f"ERROR names the bad value: {describe(err)}")
        self.assert_header(err, "receipt-id", rid)
        self.assertNotIn(rid, r.receipts, "no RECEIPT for the refused SEND")
        r.wait(lambda: r.disconnected, "the broker to close the connection after ERROR")

        # Nothing confirmed was lost, and the refused message was not stored.
        c = self.client("consumer")
        c.subscribe(dest, "s", "client-individual")
        m = c.next_message("the confirmed message")
        self.assertEqual(m.body, "confirmed before the error")
        c.ack(m)
        p2 = self.client("producer2")
        self.assert_next_is_marker(c, p2, dest)

    # (9) ----------------------------------------------------------------------------------
    def test_09_dedup_id_sent_twice_is_stored_once(self):
        dest = queue_name("dedup")
        p = self.client("producer")
        key = unique("order")
        first = p.send(dest, "once", **{"dedup-id": key})
        second = p.send(dest, "once", **{"dedup-id": key})
        # The ActiveMQ/Artemis alias names the same id.
        third = p.send(dest, "once", **{"_AMQ_DUPL_ID": key})
        for r in (second, third):
            self.assert_header(r, "duplicate", "true")
            if "message-id" in r.headers:
                self.assert_header(r, "message-id", first.headers.get("message-id"))
        self.assertNotEqual(first.headers.get("duplicate"), "true", describe(first))

        c = self.client("consumer")
        c.subscribe(dest, "s", "client-individual")
        m = c.next_message("the deduplicated message")
        self.assertEqual(m.body, "once")
        self.assert_header(m, "message-id", first.headers.get("message-id"))
        c.ack(m)
        self.assert_next_is_marker(c, p, dest)

    # (10) ---------------------------------------------------------------------------------
    def test_10_selector_on_subscribe(self):
        dest = queue_name("selector")
        p = self.client("producer")
        rows = [("EUR", "15000.5", "EU-west"), ("USD", "20000", "US-east"), ("EUR", "500", "EU-west"),
                ("GBP", "99999", "EU-north"), ("USD", "12000", "EU-south")]
        for i, (cur, amount, region) in enumerate(rows):
            p.send(dest, f"m{i}", currency=cur, amount=amount, region=region,
                   **{"postbus-types": "amount:double"})
        c = self.client("selective")
        c.subscribe(dest, "s", "client-individual",
                    selector="currency IN ('EUR','USD') AND amount > 10000 AND region LIKE 'EU-%'")
        got = []
        for _ in range(2):
            m = c.next_message("a matching message")
            got.append(m.body)
            c.ack(m)
        self.assertEqual(got, ["m0", "m4"])
        # An invalid selector is refused with the column of the fault.
        bad = self.client("bad-selector")
        bad.conn.subscribe(dest, "b", ack="auto", headers={"selector": "amount > AND x = 1"})
        bad.rec.wait(lambda: bad.rec.errors, "an ERROR frame for an invalid selector")
        err = bad.rec.errors[0]
        self.assertIn("column 10", err.headers.get("message", ""), describe(err))

    def test_11_topic_durable_subscriber_and_wildcard(self):
        topic = f"py.topic.t{uuid.uuid4().hex[:10]}"
        cid = unique("durable")

        def durable_client(name):
            c = Client(f"test_11/{name}").connect(**{"client-id": cid})
            self._clients.append(c)
            return c

        d = durable_client("away")
        d.subscribe(f"/topic/{topic}", "d", "client-individual",
                    **{"durable-subscription-name": "books"})
        d.disconnect()
        w = self.client("wildcard")
        w.subscribe(f"/topic/{topic.rsplit('.', 1)[0]}.*", "w", "auto")
        p = self.client("publisher")
        first = p.send(f"/topic/{topic}", "m0")
        for i in range(1, 20):
            p.send(f"/topic/{topic}", f"m{i}")
        d = durable_client("back")
        d.subscribe(f"/topic/{topic}", "d", "client-individual",
                    **{"durable-subscription-name": "books"})
        got = []
        for i in range(20):
            m = d.next_message(f"durable message {i}")
            got.append(m.body)
            if i == 0:
                self.assert_header(m, "message-id", first.headers["message-id"])
                self.assert_header(m, "destination", f"/topic/{topic}")
            d.ack(m)
        self.assertEqual(got, [f"m{i}" for i in range(20)])
        seen = [w.next_message(f"wildcard message {i}").body for i in range(20)]
        self.assertEqual(seen, [f"m{i}" for i in range(20)])

    def test_12_request_reply_seat_reservation(self):
        """The README's request/reply example."""
        seats = queue_name("seats")
        service = self.client("service")
        service.subscribe(seats, "s", "client-individual")
        client = self.client("client")
        client.subscribe("/temp-queue/replies", "r", "auto")
        client.send(seats, "reserve 12A on PB123",
                    **{"reply-to": "/temp-queue/replies", "correlation-id": "req-1"})
        req = service.next_message("the request")
        reply_to = req.headers["reply-to"]
        self.assertTrue(reply_to.startswith("/temp-queue/tmp."), describe(req))
        service.send(reply_to, "12A confirmed",
                     **{"correlation-id": req.headers["correlation-id"]})
        service.ack(req)
        reply = client.next_message("the reply")
        self.assertEqual(reply.body, "12A confirmed")
        self.assert_header(reply, "correlation-id", "req-1")
        # Only its connection may consume from it.
        other = self.client("other")
        other.conn.subscribe(reply_to, "x", ack="auto")
        other.rec.wait(lambda: other.rec.errors, "an ERROR frame for someone else's temporary queue")
        self.assertIn("another connection", other.rec.errors[0].headers.get("message", ""))


def main():
    global ADDR
    ADDR = broker_address()
    print(
        f"stomp.py {stomp.__version__} (python {sys.version.split()[0]}) "
        f"against {ADDR[0]}:{ADDR[1]}",
        flush=True,
    )
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
