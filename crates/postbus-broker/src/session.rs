//! One STOMP connection: the handshake, then a loop that reads client frames, writes
//! deliveries, and answers with RECEIPTs in the order the frames came, each only after what it
//! confirms has committed.
//!
//! The session owns its subscriptions and open transactions. Queues own the bookkeeping of
//! what is in flight to which consumer (see [`crate::queue`]); the session asks them to begin
//! and finish settlements around each write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use postbus_auth::{Action, Identity};
use postbus_model::{Destination, DestinationKind, QueueSettings, StoredMessage};
use postbus_stomp::{Command, Frame, Item, StompCodec, Version, negotiate_version};
use postbus_store::{
    AuditRecord, InsertOutcome, InsertRow, ReleaseRow, SubscriptionSpec, Unit, UnitOutcome,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::engine::Engine;
use crate::queue::{
    AckMode, ConsumerId, ConsumerSpec, InFlight, QueueRuntime, SessionEvent, Settled,
};
use crate::selecting::ConsumerSelector;
use crate::send::parse_send;
use crate::writer::WriteError;

const SUPPORTED: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

/// What the session asks its writer task to do.
enum Out {
    Frame(Frame),
    /// A MESSAGE for an auto-ack subscription: acknowledged once it is written.
    AutoAck(Frame, AutoAckNote),
    Close,
}

struct AutoAckNote {
    queue: Arc<QueueRuntime>,
    consumer: ConsumerId,
    id: i64,
}

/// Why the session ends.
enum End {
    /// Tell the client why, then close.
    Error {
        message: String,
        detail: String,
        receipt: Option<String>,
    },
    /// The client went away or said DISCONNECT.
    Quiet,
}

impl End {
    fn error(message: impl Into<String>, receipt: Option<&str>) -> End {
        End::Error {
            message: message.into(),
            detail: String::new(),
            receipt: receipt.map(str::to_owned),
        }
    }
}

struct Subscription {
    queue: Arc<QueueRuntime>,
    consumer: ConsumerId,
    ack: AckMode,
    /// A topic subscription: when this consumer goes, the engine hears of it (a non-durable
    /// subscription goes with its last consumer).
    topic: bool,
}

/// A transacted session's pending work.
#[derive(Default)]
struct Transaction {
    inserts: Vec<InsertRow>,
    /// Acked (or nacked) messages per (queue, consumer): marked settling until COMMIT/ABORT.
    acks: Vec<(Arc<QueueRuntime>, ConsumerId, Vec<InFlight>, bool)>,
    operations: usize,
}

/// A write the session waits for, in frame order.
type Pending = Pin<Box<dyn std::future::Future<Output = Completion> + Send>>;

struct Completion {
    result: Result<UnitOutcome, WriteError>,
    then: Then,
    receipt: Option<String>,
}

/// What to do when a write completes.
enum Then {
    Nothing,
    Send,
    /// Finish settlements: (queue, consumer, ids).
    Settle(Vec<(Arc<QueueRuntime>, ConsumerId, Vec<i64>)>),
    /// A release of messages that paused a queue's claims.
    Released(Vec<(Arc<QueueRuntime>, ConsumerId, Vec<i64>)>),
    Commit(Vec<(Arc<QueueRuntime>, ConsumerId, Vec<i64>)>),
}

struct Session {
    engine: Engine,
    conn: u64,
    version: Version,
    client_id: Option<String>,
    /// Who the client authenticated as (JMSXUserID of its messages, subject of its checks).
    identity: Identity,
    subs: HashMap<String, Subscription>,
    /// Message id -> subscription id, for the messages in flight to this connection.
    delivered: HashMap<i64, String>,
    /// Message id -> when it was delivered (for the delivery-to-ack latency) and the trace
    /// context of its delivery (for the settle span).
    delivered_at: HashMap<i64, (std::time::Instant, Option<String>)>,
    /// Metric labels of the destinations this connection sent to (its producer gauges).
    producing: std::collections::HashSet<String>,
    transactions: HashMap<String, Transaction>,
    out: mpsc::UnboundedSender<Out>,
    events_tx: mpsc::UnboundedSender<SessionEvent>,
    pending: FuturesOrdered<Pending>,
    /// Producer flow control: the queue whose full dispatch buffer holds this connection's
    /// reading back, and until when at most.
    held: Option<(Arc<QueueRuntime>, tokio::time::Instant)>,
    /// Temporary queues this connection created, by the name it gave them; deleted with it.
    temp_queues: HashMap<String, Arc<QueueRuntime>>,
    /// Browses under way, by subscription id (UNSUBSCRIBE or the end of the connection stops
    /// them).
    browses: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// Splits a temporary queue's global name `tmp.<node>.<connection>.<name>`.
fn parse_temp_global(name: &str) -> Option<(i64, u64, &str)> {
    let rest = name.strip_prefix("tmp.")?;
    let (node, rest) = rest.split_once('.')?;
    let (conn, local) = rest.split_once('.')?;
    Some((node.parse().ok()?, conn.parse().ok()?, local))
}

/// Resolves when the queue holding a producer back has room again (or its time is up).
async fn room_or_deadline(held: &Option<(Arc<QueueRuntime>, tokio::time::Instant)>) {
    match held {
        Some((queue, deadline)) => queue.wait_for_room(*deadline).await,
        None => std::future::pending().await,
    }
}

/// Serves one client connection until it ends.
/// Runs one STOMP connection; `cert_principal` is the subject of the client's verified TLS
/// certificate, if it showed one.
pub async fn run_session<S>(
    engine: Engine,
    stream: S,
    peer: SocketAddr,
    cert_principal: Option<String>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let conn = engine.next_id();
    let (read_half, write_half) = tokio::io::split(stream);
    let limits = engine.config().codec_limits();
    let mut reader = FramedRead::new(read_half, StompCodec::new(limits));
    let mut writer = FramedWrite::new(write_half, StompCodec::new(limits));

    // Handshake.
    let connect_timeout = Duration::from_millis(engine.config().connect_timeout_ms);
    let first = match tokio::time::timeout(connect_timeout, next_frame(&mut reader)).await {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return,
        Ok(Err(message)) => {
            let _ = writer.send(error_frame(&message, "", None)).await;
            return;
        }
        Err(_) => {
            let msg = format!("no CONNECT frame within {} ms", connect_timeout.as_millis());
            let _ = writer.send(error_frame(&msg, "", None)).await;
            return;
        }
    };
    // Authentication, registration and the answer wait for a turn: a storm of new
    // connections then runs a few handshakes at a time beside the established sessions
    // instead of thousands ahead of them. The turn ends when `turn` is dropped: after
    // CONNECTED is sent, or with the refusal.
    let mut turn = engine.handshake_turn().await;
    if !matches!(first.command, Command::Connect | Command::Stomp) {
        let msg = format!(
            "expected CONNECT or STOMP as the first frame, got {}",
            first.command.as_str()
        );
        let _ = writer.send(error_frame(&msg, "", None)).await;
        return;
    }
    let Some(version) = negotiate_version(first.header("accept-version"), &SUPPORTED) else {
        let e = error_frame(
            "no common STOMP version",
            "postbus supports STOMP 1.0, 1.1 and 1.2",
            None,
        )
        .with_header("version", "1.0,1.1,1.2");
        let _ = writer.send(e).await;
        return;
    };
    let (client_beat, want_beat) =
        negotiate_heartbeat(first.header("heart-beat"), engine.config().heartbeat_ms);
    let client_id = first
        .header("client-id")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    // The passcode carries the JWT; `login` is not trusted for anything.
    let identity = match engine
        .security()
        .authenticate(first.header("passcode"), cert_principal.as_deref())
    {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(conn, %peer, error = %e, "authentication failed");
            engine
                .metrics()
                .auth_failures
                .with_label_values(&["stomp"])
                .inc();
            engine.audit(AuditRecord::new("auth.failed").detail(serde_json::json!({
                "peer": peer.to_string(),
                "protocol": "stomp",
                "reason": e.to_string(),
            })));
            let _ = writer.send(error_frame(&e.to_string(), "", None)).await;
            return;
        }
    };
    // A token that expires while connected ends the session then.
    let expires = identity.expires_at.map(|exp| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(now))
    });
    let kick = match &client_id {
        Some(id) => {
            // Waiting for an older session with this client id to end is not work: the turn
            // goes back meanwhile.
            drop(turn);
            let kick = engine.claim_client_id(id, conn).await;
            turn = engine.handshake_turn().await;
            Some(kick)
        }
        None => None,
    };
    // Listed by the admin API from here on; refused past the principal's connection limit.
    let registered = engine.register_connection(crate::engine::ConnectionInfo {
        id: conn,
        peer: peer.to_string(),
        principal: identity.principal.clone(),
        client_id: client_id.clone(),
        version: version.as_str(),
        connected_at: postbus_store::clock::now_ms(),
        subscriptions: 0,
        in_flight: 0,
    });
    let closed_by_operator = match registered {
        Ok(signal) => signal,
        Err(why) => {
            tracing::warn!(conn, %peer, principal = %identity.principal, "{why}");
            engine.audit(
                AuditRecord::new("connect.refused")
                    .principal(identity.principal.clone())
                    .detail(serde_json::json!({
                        "peer": peer.to_string(),
                        "client_id": client_id,
                        "reason": why,
                    })),
            );
            if let Some(id) = &client_id {
                engine.release_client_id(id, conn);
            }
            let _ = writer.send(error_frame(&why, "", None)).await;
            return;
        }
    };
    let mut connected = Frame::new(Command::Connected)
        .with_header("version", version.as_str())
        .with_header("server", concat!("postbus/", env!("CARGO_PKG_VERSION")))
        .with_header("session", format!("{}-{conn}", engine.node().0))
        .with_header(
            "heart-beat",
            format!(
                "{},{}",
                engine.config().heartbeat_ms,
                engine.config().heartbeat_ms
            ),
        );
    if version == Version::V1_0 {
        connected.headers.retain(|(k, _)| k != "heart-beat");
    }
    if writer.send(connected).await.is_err() {
        if let Some(id) = &client_id {
            engine.release_client_id(id, conn);
        }
        engine.deregister_connection(conn);
        return;
    }
    drop(turn);
    engine.audit(
        AuditRecord::new("connect")
            .principal(identity.principal.clone())
            .detail(serde_json::json!({
                "peer": peer.to_string(),
                "connection": conn,
                "client_id": client_id,
                "roles": identity.roles,
                "certificate": cert_principal.is_some(),
            })),
    );
    reader.decoder_mut().set_version(version);
    writer.encoder_mut().set_version(version);
    tracing::debug!(conn, %peer, version = version.as_str(), "connected");

    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(write_loop(writer, out_rx, client_beat, acked_tx));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut s = Session {
        engine: engine.clone(),
        conn,
        version,
        client_id: client_id.clone(),
        identity,
        subs: HashMap::new(),
        delivered: HashMap::new(),
        delivered_at: HashMap::new(),
        producing: Default::default(),
        transactions: HashMap::new(),
        out: out_tx,
        events_tx,
        pending: FuturesOrdered::new(),
        held: None,
        temp_queues: HashMap::new(),
        browses: HashMap::new(),
    };
    let max_unconfirmed = engine.config().max_unconfirmed_frames.max(1);
    let read_timeout = want_beat.map(|d| d.mul_f64(engine.config().heartbeat_grace.max(1.0)));
    let kick = kick.unwrap_or_else(|| Arc::new(tokio::sync::Notify::new()));
    // The trace id of the frame that ended the session, if it was traced.
    let mut ended_by: Option<String> = None;
    let end = loop {
        tokio::select! {
            biased;
            Some(done) = s.pending.next(), if !s.pending.is_empty() => {
                if let Some(end) = s.complete(done) { break end; }
            }
            Some(note) = acked_rx.recv() => s.auto_ack(note),
            Some(event) = events_rx.recv() => s.deliver(event),
            _ = kick.notified() => break End::error("another connection took over this client-id", None),
            _ = closed_by_operator.notified() => break End::error("closed by an administrator", None),
            _ = until(expires), if expires.is_some() => break End::error("the token expired: reconnect with a fresh one", None),
            _ = room_or_deadline(&s.held), if s.held.is_some() => s.held = None,
            // Back-pressure: a connection with too many writes unfinished, or held back by a
            // full queue, is not read (TCP then slows the client down).
            frame = read_with_timeout(&mut reader, read_timeout),
                if s.held.is_none() && s.pending.len() < max_unconfirmed => match frame {
                Ok(Some(frame)) => {
                    // A traced frame's log lines carry its trace id (JSON logs: `span.trace_id`).
                    let trace = frame
                        .header("traceparent")
                        .and_then(crate::otel::trace_id_of)
                        .map(str::to_owned);
                    let end = match &trace {
                        Some(t) => {
                            use tracing::Instrument as _;
                            s.handle(frame).instrument(tracing::info_span!("frame", trace_id = %t)).await
                        }
                        None => s.handle(frame).await,
                    };
                    if let Some(end) = end {
                        ended_by = trace;
                        break end;
                    }
                }
                Ok(None) => break End::Quiet,
                Err(message) => break End::Error { message, detail: String::new(), receipt: None },
            },
        }
    };

    // Let writes already handed to the writer finish, so state is settled before teardown.
    while let Some(done) = s.pending.next().await {
        if let End::Error { .. } = end {
            s.settle_only(done);
        } else if let Some(e) = s.complete(done) {
            s.send_end(e);
        }
    }
    s.teardown().await;
    engine.deregister_connection(conn);
    engine.audit(
        AuditRecord::new("disconnect")
            .principal(s.identity.principal.clone())
            .detail(serde_json::json!({"connection": conn})),
    );
    match end {
        End::Error {
            message,
            detail,
            receipt,
        } => {
            tracing::info!(
                conn,
                %peer,
                principal = %s.identity.principal,
                trace_id = ended_by.as_deref(),
                error = %message,
                "connection ended with an ERROR frame"
            );
            let _ = s.out.send(Out::Frame(error_frame(
                &message,
                &detail,
                receipt.as_deref(),
            )));
        }
        End::Quiet => {}
    }
    let _ = s.out.send(Out::Close);
    drop(s.out);
    let _ = writer_task.await;
    if let Some(id) = &client_id {
        engine.release_client_id(id, conn);
    }
    tracing::debug!(conn, %peer, "disconnected");
}

async fn next_frame<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, StompCodec>,
) -> Result<Option<Frame>, String> {
    loop {
        match reader.next().await {
            None => return Ok(None),
            Some(Ok(Item::HeartBeat)) => continue,
            Some(Ok(Item::Frame(f))) => return Ok(Some(f)),
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// Reads the next frame; a client silent past its heart-beat grace is an error.
async fn read_with_timeout<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, StompCodec>,
    timeout: Option<Duration>,
) -> Result<Option<Frame>, String> {
    loop {
        let item = match timeout {
            Some(t) => match tokio::time::timeout(t, reader.next()).await {
                Ok(item) => item,
                Err(_) => {
                    return Err(format!(
                        "no heart-beat or frame from the client within {} ms",
                        t.as_millis()
                    ));
                }
            },
            None => reader.next().await,
        };
        match item {
            None => return Ok(None),
            Some(Ok(Item::HeartBeat)) => continue,
            Some(Ok(Item::Frame(f))) => return Ok(Some(f)),
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// Returns (how often we must send, how long the client may stay silent).
fn negotiate_heartbeat(header: Option<&str>, ours_ms: u32) -> (Option<Duration>, Option<Duration>) {
    let (cx, cy) = header
        .and_then(|h| h.split_once(','))
        .map(|(a, b)| {
            (
                a.trim().parse::<u64>().unwrap_or(0),
                b.trim().parse::<u64>().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0));
    let ours = ours_ms as u64;
    let send = (ours > 0 && cy > 0).then(|| Duration::from_millis(ours.max(cy)));
    let expect = (ours > 0 && cx > 0).then(|| Duration::from_millis(ours.max(cx)));
    (send, expect)
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, StompCodec>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    heartbeat: Option<Duration>,
    acked: mpsc::UnboundedSender<AutoAckNote>,
) {
    let mut written_auto = Vec::new();
    loop {
        let next = match heartbeat {
            Some(every) => match tokio::time::timeout(every, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    if sink.send(Item::HeartBeat).await.is_err() {
                        return;
                    }
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(mut out) = next else { return };
        // Write everything queued, then flush once.
        loop {
            let ok = match out {
                Out::Frame(f) => sink.feed(Item::Frame(f)).await.is_ok(),
                Out::AutoAck(f, note) => {
                    written_auto.push(note);
                    sink.feed(Item::Frame(f)).await.is_ok()
                }
                Out::Close => {
                    let _ = SinkExt::<Item>::flush(&mut sink).await;
                    let _ = sink.get_mut().shutdown().await;
                    return;
                }
            };
            if !ok {
                return;
            }
            match rx.try_recv() {
                Ok(o) => out = o,
                Err(_) => break,
            }
        }
        if SinkExt::<Item>::flush(&mut sink).await.is_err() {
            return;
        }
        for note in written_auto.drain(..) {
            let _ = acked.send(note);
        }
    }
}

use tokio::io::AsyncWriteExt;

/// Sleeps until `at` (forever when None; the select branch is disabled then anyway).
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn error_frame(message: &str, detail: &str, receipt: Option<&str>) -> Frame {
    let one_line: String = message.replace(['\n', '\r'], " ");
    let mut f = Frame::new(Command::Error).with_header("message", one_line);
    if let Some(r) = receipt {
        f.push_header("receipt-id", r);
    }
    let body = if detail.is_empty() {
        message.to_owned()
    } else {
        format!("{message}\n\n{detail}")
    };
    f.push_header("content-type", "text/plain");
    f.with_body(body.into_bytes())
}

fn receipt_frame(id: &str) -> Frame {
    Frame::new(Command::Receipt).with_header("receipt-id", id)
}

fn ready(result: Result<UnitOutcome, WriteError>, then: Then, receipt: Option<String>) -> Pending {
    Box::pin(async move {
        Completion {
            result,
            then,
            receipt,
        }
    })
}

fn ok_unit() -> UnitOutcome {
    UnitOutcome::Committed {
        inserted: vec![],
        lost_acks: vec![],
        lost_releases: vec![],
    }
}

impl Session {
    fn send_frame(&self, f: Frame) {
        let _ = self.out.send(Out::Frame(f));
    }

    fn send_end(&self, end: End) {
        if let End::Error {
            message,
            detail,
            receipt,
        } = end
        {
            self.send_frame(error_frame(&message, &detail, receipt.as_deref()));
        }
    }

    /// Queues a write; its completion is handled in frame order.
    fn wait_for(&mut self, unit: Unit, then: Then, receipt: Option<String>) {
        self.wait_for_traced(unit, then, receipt, None)
    }

    /// [`Session::wait_for`], ending `span` (a send span) when the unit has committed.
    fn wait_for_traced(
        &mut self,
        unit: Unit,
        then: Then,
        receipt: Option<String>,
        span: Option<crate::otel::OtelSpan>,
    ) {
        let rx = self.engine.submit(self.conn, unit, receipt.is_some());
        let timed = matches!(then, Then::Send | Then::Commit(_));
        let metrics = self.engine.metrics().clone();
        let started = std::time::Instant::now();
        self.pending.push_back(Box::pin(async move {
            let result = rx
                .await
                .unwrap_or_else(|_| Err(WriteError::Failed("the broker is shutting down".into())));
            if timed && result.is_ok() {
                metrics.send_commit.observe(started.elapsed().as_secs_f64());
            }
            if let Some(mut span) = span {
                use opentelemetry::trace::Span as _;
                if result.is_err() {
                    span.set_status(opentelemetry::trace::Status::error("not committed"));
                }
                span.end();
            }
            Completion {
                result,
                then,
                receipt,
            }
        }));
    }

    /// A frame's answer that needs no write, kept in order behind earlier writes.
    fn answer(&mut self, receipt: Option<&str>) {
        if let Some(r) = receipt {
            self.pending
                .push_back(ready(Ok(ok_unit()), Then::Nothing, Some(r.to_owned())));
        }
    }

    async fn handle(&mut self, frame: Frame) -> Option<End> {
        let receipt = frame.header("receipt").map(str::to_owned);
        let r = receipt.as_deref();
        match frame.command {
            Command::Send => self.on_send(&frame).await,
            Command::Subscribe => self.on_subscribe(&frame).await,
            Command::Unsubscribe => self.on_unsubscribe(&frame),
            Command::Ack | Command::Nack => self.on_settle(&frame).await,
            Command::Begin => {
                let Some(tx) = frame.header("transaction") else {
                    return Some(End::error("BEGIN needs a transaction header", r));
                };
                if self.transactions.contains_key(tx) {
                    return Some(End::error(format!("transaction {tx} is already open"), r));
                }
                if self.transactions.len() >= self.engine.config().max_open_transactions {
                    return Some(End::error(
                        format!(
                            "too many open transactions on this connection (limit {}): commit or abort one first",
                            self.engine.config().max_open_transactions
                        ),
                        r,
                    ));
                }
                self.transactions
                    .insert(tx.to_owned(), Transaction::default());
                self.answer(r);
                None
            }
            Command::Commit => self.on_commit(&frame).await,
            Command::Abort => {
                let Some(tx_id) = frame.header("transaction") else {
                    return Some(End::error("ABORT needs a transaction header", r));
                };
                let Some(tx) = self.transactions.remove(tx_id) else {
                    return Some(End::error(
                        format!("transaction {tx_id} is not open on this connection"),
                        r,
                    ));
                };
                self.abort(tx, receipt).await;
                None
            }
            Command::Disconnect => {
                // Earlier frames' receipts first, then this one.
                while let Some(done) = self.pending.next().await {
                    if let Some(e) = self.complete(done) {
                        return Some(e);
                    }
                }
                self.teardown().await;
                if let Some(r) = r {
                    self.send_frame(receipt_frame(r));
                }
                Some(End::Quiet)
            }
            Command::Connect | Command::Stomp => Some(End::error(
                "already connected: CONNECT may only be sent once",
                r,
            )),
            other => Some(End::error(
                format!(
                    "{} is a server frame; a client may not send it",
                    other.as_str()
                ),
                r,
            )),
        }
    }

    /// Checks the policies: `action` on `destination`, and `create` too when a queue or topic
    /// would be created by this use. This connection's own temporary queues need no rule.
    async fn authorize_destination(
        &mut self,
        action: Action,
        destination: &Destination,
        receipt: Option<&str>,
    ) -> Option<End> {
        let kind = destination.kind;
        if kind == DestinationKind::TempQueue && parse_temp_global(&destination.name).is_none() {
            return None;
        }
        let name = destination.to_stomp();
        if let Some(end) = self.authorize(action, &name, receipt) {
            return Some(end);
        }
        // Sending creates a queue or topic on first use; the lookup is skipped when creating
        // is allowed anyway.
        let creates = action == Action::Send
            && matches!(kind, DestinationKind::Queue | DestinationKind::Topic);
        if creates
            && !self
                .engine
                .security()
                .decide(&self.identity, Action::Create, &name)
                .allowed
        {
            match self
                .engine
                .destination_exists(kind, &destination.name)
                .await
            {
                Ok(true) => {}
                Ok(false) => return self.authorize(Action::Create, &name, receipt),
                Err(e) => return Some(End::error(e.to_string(), receipt)),
            }
        }
        None
    }

    /// `message.acked` audit records for acks of a destination that audits its messages (the
    /// id is the row's: a topic copy's own id), written in the ack's transaction.
    fn ack_audit(&self, queue: &QueueRuntime, ids: &[i64]) -> Vec<AuditRecord> {
        if !queue.settings().audit_messages {
            return Vec::new();
        }
        ids.iter()
            .map(|id| {
                AuditRecord::new("message.acked")
                    .principal(self.identity.principal.clone())
                    .destination(format!("/{}/{}", queue.kind.as_str(), queue.name))
                    .detail(serde_json::json!({"message_id": format!("ID:{id}")}))
            })
            .collect()
    }

    /// An ERROR (which ends the connection) when the policies do not allow it.
    fn authorize(&self, action: Action, destination: &str, receipt: Option<&str>) -> Option<End> {
        self.engine
            .authorize(&self.identity, action, destination, "stomp")
            .err()
            .map(|why| End::error(why, receipt))
    }

    async fn on_send(&mut self, frame: &Frame) -> Option<End> {
        let receipt = frame.header("receipt").map(str::to_owned);
        let mut req = match parse_send(
            frame,
            Some(self.identity.principal.as_str()),
            postbus_store::clock::now_ms(),
        ) {
            Ok(req) => req,
            Err(e) => return Some(End::error(e, receipt.as_deref())),
        };
        if let Some(end) = self
            .authorize_destination(Action::Send, &req.destination, receipt.as_deref())
            .await
        {
            return Some(end);
        }
        // A traced message: the broker's send span continues the producer's trace, and the
        // message carries the broker's context from here on.
        let mut send_span = None;
        if let (Some(otel), Some(tp)) = (self.engine.otel(), req.message.traceparent.clone())
            && let Some((span, ours)) = otel.send(
                &req.destination.to_stomp(),
                &tp,
                req.message.tracestate.as_deref(),
            )
        {
            req.message.traceparent = Some(ours);
            send_span = Some(span);
        }
        // A reply-to naming one of this connection's temporary queues is rewritten to its
        // global name, which whoever replies can send to (the queue is made now, so a reply
        // that comes at once is not lost).
        if let Some(local) = req
            .message
            .reply_to
            .as_deref()
            .and_then(|r| r.strip_prefix("/temp-queue/"))
            .filter(|l| parse_temp_global(l).is_none())
            .map(str::to_owned)
        {
            match self.temp_queue(&local).await {
                Ok((q, _)) => req.message.reply_to = Some(format!("/temp-queue/{}", q.name)),
                Err(e) => return Some(End::error(e, receipt.as_deref())),
            }
        }
        let (row, queue) = match req.destination.kind {
            kind @ (DestinationKind::Queue | DestinationKind::TempQueue) => {
                let resolved = if kind == DestinationKind::Queue {
                    self.engine
                        .resolve_send_target(&req.destination)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    self.temp_queue(&req.destination.name).await.map(|(q, _)| q)
                };
                let queue = match resolved {
                    Ok(q) => q,
                    Err(e) => return Some(End::error(e, receipt.as_deref())),
                };
                let row = queue.insert_row(req.message, &req.destination);
                (row, Some(queue))
            }
            DestinationKind::Topic => {
                let topic = match self.engine.topic(&req.destination.name).await {
                    Ok(t) => t,
                    Err(e) => return Some(End::error(e.to_string(), receipt.as_deref())),
                };
                let row = InsertRow {
                    queue_id: topic.id,
                    dedup_window_ms: topic.settings.dedup_window_ms,
                    message: req.message,
                    pre_claimed: false,
                    audited: topic
                        .settings
                        .audit_messages
                        .then(|| req.destination.to_stomp()),
                    topic: Some(topic.name),
                };
                (row, None)
            }
            other => {
                return Some(End::error(
                    format!(
                        "{} destinations are not supported by this broker version: send to /queue/NAME or /topic/NAME",
                        other.as_str()
                    ),
                    receipt.as_deref(),
                ));
            }
        };
        // The producer gauge: a lookup only on this connection's first send to a destination
        // (a queue's runtime knows its label; topics look it up).
        let known = queue.as_ref().map(|q| q.counters.label.as_str());
        if !known.is_some_and(|l| self.producing.contains(l)) {
            let label = match known {
                Some(l) => l.to_owned(),
                None => self.engine.metrics().label(&req.destination.to_stomp()),
            };
            if self.producing.insert(label.clone()) {
                self.engine
                    .metrics()
                    .producers
                    .with_label_values(&[label.as_str()])
                    .inc();
            }
        }
        if let Some(tx_id) = req.transaction {
            let limit = self.engine.config().max_transaction_operations;
            let Some(tx) = self.transactions.get_mut(&tx_id) else {
                return Some(End::error(
                    format!("transaction {tx_id} is not open: send BEGIN first"),
                    receipt.as_deref(),
                ));
            };
            if tx.operations >= limit {
                return Some(End::error(
                    format!(
                        "transaction {tx_id} has reached the limit of {limit} operations: commit it and start another"
                    ),
                    receipt.as_deref(),
                ));
            }
            tx.operations += 1;
            tx.inserts.push(row);
            self.answer(receipt.as_deref());
            return None;
        }
        self.wait_for_traced(
            Unit {
                inserts: vec![row],
                ..Default::default()
            },
            Then::Send,
            receipt,
            send_span,
        );
        let hold_ms = self.engine.config().producer_flow_control_ms;
        if let Some(queue) = queue
            && hold_ms > 0
            && queue.is_full()
        {
            let until = tokio::time::Instant::now() + Duration::from_millis(hold_ms);
            self.held = Some((queue, until));
        }
        None
    }

    async fn on_subscribe(&mut self, frame: &Frame) -> Option<End> {
        let r = frame.header("receipt");
        let Some(dest) = frame.header("destination") else {
            return Some(End::error("SUBSCRIBE needs a destination header", r));
        };
        let id = match (frame.header("id"), self.version) {
            (Some(id), _) => id.to_owned(),
            (None, Version::V1_2) => {
                return Some(End::error("SUBSCRIBE needs an id header (STOMP 1.2)", r));
            }
            (None, _) => dest.to_owned(),
        };
        if self.subs.contains_key(&id) || self.browses.contains_key(&id) {
            return Some(End::error(
                format!("subscription id {id} is already in use on this connection"),
                r,
            ));
        }
        let max_subs = self.engine.config().max_subscriptions_per_connection;
        if self.subs.len() >= max_subs {
            return Some(End::error(
                format!("too many subscriptions on this connection (limit {max_subs})"),
                r,
            ));
        }
        let ack = match frame.header("ack").map(AckMode::parse) {
            None => AckMode::Auto,
            Some(Some(a)) => a,
            Some(None) => {
                return Some(End::error(
                    format!(
                        "ack:{} is not valid: use auto, client or client-individual",
                        frame.header("ack").unwrap_or("")
                    ),
                    r,
                ));
            }
        };
        let destination = match postbus_model::Destination::parse_stomp_pattern(dest) {
            Ok(d) => d,
            Err(e) => return Some(End::error(e.to_string(), r)),
        };
        if !matches!(
            destination.kind,
            DestinationKind::Queue | DestinationKind::Topic | DestinationKind::TempQueue
        ) {
            return Some(End::error(
                format!(
                    "{} subscriptions are not supported by this broker version: subscribe to /queue/NAME or /topic/NAME",
                    destination.kind.as_str()
                ),
                r,
            ));
        }
        // `browse` (ActiveMQ: `browser`): a non-destructive look at a queue.
        let browse = frame.header("browse").or_else(|| frame.header("browser")) == Some("true");
        if browse && destination.kind == DestinationKind::Topic {
            return Some(End::error(
                "browse applies to queues: a topic holds no messages of its own",
                r,
            ));
        }
        let action = if browse {
            Action::Browse
        } else {
            Action::Consume
        };
        if let Some(end) = self.authorize_destination(action, &destination, r).await {
            return Some(end);
        }
        let prefetch_header = frame
            .header("prefetch")
            .or_else(|| frame.header("activemq.prefetchSize"))
            .or_else(|| frame.header("prefetch-count"));
        let prefetch = match prefetch_header {
            None => self.engine.config().default_prefetch,
            Some(p) => match p.parse::<u32>() {
                Ok(n) if n >= 1 && n <= self.engine.config().max_prefetch => n,
                _ => {
                    return Some(End::error(
                        format!(
                            "prefetch:{p} is not valid: use an integer from 1 to {}",
                            self.engine.config().max_prefetch
                        ),
                        r,
                    ));
                }
            },
        };
        let exclusive = frame
            .header("exclusive")
            .or_else(|| frame.header("activemq.exclusive"))
            == Some("true");
        let selector = match frame.header("selector").filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(_) if exclusive => {
                return Some(End::error(
                    "a selector on an exclusive consumer is not supported: drop one of them",
                    r,
                ));
            }
            Some(text) => {
                match ConsumerSelector::parse(text, &self.engine.config().selector_limits()) {
                    Ok(s) => Some(Arc::new(s)),
                    Err(e) => return Some(End::error(e, r)),
                }
            }
        };
        if browse {
            let queue = match destination.kind {
                DestinationKind::TempQueue => match self.temp_queue(&destination.name).await {
                    Ok((q, _)) => q,
                    Err(e) => return Some(End::error(e, r)),
                },
                _ => match self.engine.queue(&destination.name, false).await {
                    Ok(q) => q,
                    Err(e) => return Some(End::error(e.to_string(), r)),
                },
            };
            self.start_browse(id, queue, selector);
            self.answer(r);
            return None;
        }
        let topic = destination.kind == DestinationKind::Topic;
        let (queue, selector) = if topic {
            if exclusive {
                return Some(End::error(
                    "exclusive applies to queue consumers: drop it from a topic subscription",
                    r,
                ));
            }
            // The subscription's selector decides which copies it gets, at publish time.
            let spec = match self.subscription_spec(frame, &destination.name, &id, selector) {
                Ok(spec) => spec,
                Err(e) => return Some(End::error(e, r)),
            };
            match self.engine.subscription(spec).await {
                Ok(q) => (q, None),
                Err(e) => return Some(End::error(e.to_string(), r)),
            }
        } else if destination.kind == DestinationKind::TempQueue {
            match self.temp_queue(&destination.name).await {
                Ok((q, true)) => (q, selector),
                Ok((q, false)) => {
                    return Some(End::error(
                        format!(
                            "temporary queue {} belongs to another connection: only the connection that created it may consume from it",
                            q.name
                        ),
                        r,
                    ));
                }
                Err(e) => return Some(End::error(e, r)),
            }
        } else {
            match self
                .engine
                .queue(&destination.name, self.engine.config().auto_create_queues)
                .await
            {
                Ok(q) => (q, selector),
                Err(e) => return Some(End::error(e.to_string(), r)),
            }
        };
        let consumer = self.engine.next_id();
        queue.add_consumer(ConsumerSpec {
            id: consumer,
            connection: self.conn,
            ack,
            subscription: Arc::from(id.as_str()),
            prefetch,
            exclusive,
            selector,
            events: self.events_tx.clone(),
        });
        self.engine.ensure_dispatcher(&queue);
        self.subs.insert(
            id,
            Subscription {
                queue,
                consumer,
                ack,
                topic,
            },
        );
        self.answer(r);
        None
    }

    /// What a topic SUBSCRIBE asks for: durable (`durable-subscription-name`, alias
    /// `activemq.subscriptionName`, scoped by the connection's client-id), shared (`shared:true`
    /// with `subscription-name`, or the durable name), or neither: a subscription that lives
    /// with this subscription id on this connection.
    fn subscription_spec(
        &self,
        frame: &Frame,
        topic: &str,
        id: &str,
        selector: Option<Arc<ConsumerSelector>>,
    ) -> Result<SubscriptionSpec, String> {
        let durable_name = frame
            .header("durable-subscription-name")
            .or_else(|| frame.header("activemq.subscriptionName"))
            .filter(|n| !n.is_empty());
        let shared = frame.header("shared") == Some("true");
        let shared_name = frame
            .header("subscription-name")
            .filter(|n| !n.is_empty())
            .or(durable_name);
        let client = self.client_id.as_deref();
        let (name, subscription_name, durable) = match (durable_name, shared) {
            (Some(n), false) => {
                let Some(c) = client else {
                    return Err(format!(
                        "durable subscription {n:?} needs a client-id: send client-id on CONNECT (durable subscriptions are scoped by it)"
                    ));
                };
                (format!("durable:{c}:{n}"), n, true)
            }
            (Some(n), true) => (
                format!("shared-durable:{}:{n}", client.unwrap_or("")),
                n,
                true,
            ),
            (None, true) => {
                let Some(n) = shared_name else {
                    return Err(
                        "a shared subscription needs a name: add a subscription-name header".into(),
                    );
                };
                (format!("shared:{}:{n}", client.unwrap_or("")), n, false)
            }
            (None, false) => (
                format!("nondurable:{}:{}:{id}", self.engine.node().0, self.conn),
                id,
                false,
            ),
        };
        Ok(SubscriptionSpec {
            name,
            topic_pattern: topic.to_owned(),
            selector: selector.map(|s| s.text.clone()),
            durable,
            shared,
            client_id: client.map(str::to_owned),
            subscription_name: Some(subscription_name.to_owned()),
            node_id: (!durable).then(|| self.engine.node()),
            settings: QueueSettings {
                max_depth: self.engine.config().subscription_max_depth,
                ..QueueSettings::default()
            },
        })
    }

    fn on_unsubscribe(&mut self, frame: &Frame) -> Option<End> {
        let r = frame.header("receipt");
        // With a durable subscription's name, UNSUBSCRIBE removes that subscription for good
        // (ActiveMQ's convention); without, it only detaches this consumer.
        let durable = frame
            .header("durable-subscription-name")
            .or_else(|| frame.header("activemq.subscriptionName"))
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let id = frame.header("id").or_else(|| frame.header("destination"));
        if let Some(task) = id.and_then(|id| self.browses.remove(id)) {
            task.abort();
            self.answer(r);
            return None;
        }
        match (id.and_then(|id| self.subs.remove(id)), &durable) {
            (Some(sub), None) => self.remove_consumer(sub, r.map(str::to_owned)),
            (Some(sub), Some(_)) => self.remove_consumer(sub, None),
            (None, Some(_)) => {}
            (None, None) => {
                return Some(End::error(
                    format!(
                        "UNSUBSCRIBE: no subscription with id {:?} on this connection",
                        id.unwrap_or("")
                    ),
                    r,
                ));
            }
        }
        if let Some(name) = durable {
            let Some(client) = self.client_id.clone() else {
                return Some(End::error(
                    format!(
                        "removing durable subscription {name:?} needs the client-id it was made with: send client-id on CONNECT"
                    ),
                    r,
                ));
            };
            let engine = self.engine.clone();
            let receipt = r.map(str::to_owned);
            // Its own task, for the reason given in `remove_consumer`.
            let removal = tokio::spawn(async move {
                let mut result = Ok(ok_unit());
                for full in [
                    format!("durable:{client}:{name}"),
                    format!("shared-durable:{client}:{name}"),
                ] {
                    match engine.store().find_subscription(&full).await {
                        Ok(Some(row)) => {
                            if let Err(e) = engine.drop_subscription(row.destination.id).await {
                                result = Err(WriteError::Failed(e.to_string()));
                            }
                        }
                        Ok(None) => {}
                        Err(e) => result = Err(WriteError::Failed(e.to_string())),
                    }
                }
                result
            });
            self.pending.push_back(Box::pin(async move {
                let result = removal.await.unwrap_or_else(|e| {
                    Err(WriteError::Failed(format!(
                        "removing the subscription failed: {e}"
                    )))
                });
                Completion {
                    result,
                    then: Then::Nothing,
                    receipt,
                }
            }));
        }
        None
    }

    /// Removes a consumer from its queue and gives back what was in flight to it.
    fn remove_consumer(&mut self, sub: Subscription, receipt: Option<String>) {
        let (topic, queue) = (sub.topic, sub.queue.clone());
        self.release_consumer(sub, receipt);
        if topic {
            // Once what this consumer had in flight is settled (acks under way commit, the rest
            // is given back), the engine hears it left: a non-durable subscription goes with
            // its last consumer, copies and all.
            let engine = self.engine.clone();
            // Its own task: leaving takes the engine's subscription lock, which a SUBSCRIBE on
            // this very session may be waiting for while this session polls nothing else.
            let leave = tokio::spawn(async move {
                let patience = Duration::from_millis(engine.config().write_retry_ms.max(1_000));
                let started = std::time::Instant::now();
                while !queue.settled() && started.elapsed() < patience {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if let Err(e) = engine.leave_subscription(queue.id).await {
                    tracing::warn!(subscription = %queue.name, error = %e, "leaving a subscription failed");
                }
            });
            self.pending.push_back(Box::pin(async move {
                let _ = leave.await;
                Completion {
                    result: Ok(ok_unit()),
                    then: Then::Nothing,
                    receipt: None,
                }
            }));
        }
    }

    fn release_consumer(&mut self, sub: Subscription, receipt: Option<String>) {
        let (returned, pending) = sub.queue.remove_consumer(sub.consumer);
        self.delivered
            .retain(|id, _| !returned.iter().any(|f| f.id == *id));
        if returned.is_empty() && pending.is_empty() {
            if let Some(r) = receipt {
                self.pending
                    .push_back(ready(Ok(ok_unit()), Then::Nothing, Some(r)));
            }
            return;
        }
        let queue = sub.queue.clone();
        let engine = self.engine.clone();
        let conn = self.conn;
        self.pending.push_back(Box::pin(async move {
            let mut releases = Vec::with_capacity(returned.len() + pending.len());
            for f in &returned {
                releases.push(
                    engine
                        .redelivery(
                            &queue,
                            f.id,
                            f.delivery_count,
                            "consumer closed without acknowledging",
                            None,
                        )
                        .await,
                );
            }
            releases.extend(pending.iter().map(|id| ReleaseRow {
                id: *id,
                increment: 0,
                ..Default::default()
            }));
            // Until it commits: the consumer is gone, so nobody else would return them.
            let result = engine
                .write_release(
                    conn,
                    Unit {
                        releases,
                        ..Default::default()
                    },
                )
                .await;
            queue.release_done();
            Completion {
                result,
                then: Then::Nothing,
                receipt,
            }
        }));
    }

    async fn on_settle(&mut self, frame: &Frame) -> Option<End> {
        let r = frame.header("receipt").map(str::to_owned);
        let is_ack = frame.command == Command::Ack;
        let verb = if is_ack { "ACK" } else { "NACK" };
        let id_text = match self.version {
            Version::V1_2 => frame.header("id"),
            _ => frame.header("message-id").or_else(|| frame.header("id")),
        };
        let Some(id_text) = id_text else {
            return Some(End::error(
                format!("{verb} needs an id header (the MESSAGE's ack header)"),
                r.as_deref(),
            ));
        };
        let Some(id) = postbus_model::MessageId::parse(id_text).map(|m| m.0) else {
            return Some(End::error(
                format!("{verb} id:{id_text} is not a message this broker delivered"),
                r.as_deref(),
            ));
        };
        let Some(sub_id) = self.delivered.get(&id).cloned() else {
            return Some(End::error(
                format!(
                    "{verb} of {id_text}: that message is not in flight to this connection (already acknowledged, or never delivered here)"
                ),
                r.as_deref(),
            ));
        };
        let Some(sub) = self.subs.get(&sub_id) else {
            return Some(End::error(
                format!("{verb} of {id_text}: its subscription was closed"),
                r.as_deref(),
            ));
        };
        let cumulative = sub.ack == AckMode::Client;
        let (queue, consumer) = (sub.queue.clone(), sub.consumer);
        let covered = match queue.begin_settle(consumer, id, cumulative) {
            Ok(c) => c,
            Err(e) => return Some(End::error(format!("{verb}: {e}"), r.as_deref())),
        };
        let ids: Vec<i64> = covered.iter().map(|f| f.id).collect();
        {
            let m = self.engine.metrics();
            let counter = if is_ack {
                &queue.counters.acked
            } else {
                &queue.counters.nacked
            };
            counter.inc_by(ids.len() as u64);
            for id in &ids {
                if let Some((t, trace)) = self.delivered_at.remove(id) {
                    m.delivery_to_ack.observe(t.elapsed().as_secs_f64());
                    if let (Some(otel), Some(tp)) = (self.engine.otel(), trace) {
                        let dest = format!("/{}/{}", queue.kind.as_str(), queue.name);
                        otel.settle(&dest, &format!("ID:{id}"), &tp, is_ack);
                    }
                }
            }
        }
        if let Some(tx_id) = frame.header("transaction") {
            let limit = self.engine.config().max_transaction_operations;
            let Some(tx) = self.transactions.get_mut(tx_id) else {
                queue.finish_settle(consumer, &ids, Settled::Failed);
                return Some(End::error(
                    format!("transaction {tx_id} is not open: send BEGIN first"),
                    r.as_deref(),
                ));
            };
            if tx.operations >= limit {
                queue.finish_settle(consumer, &ids, Settled::Failed);
                return Some(End::error(
                    format!(
                        "transaction {tx_id} has reached the limit of {limit} operations: commit it and start another"
                    ),
                    r.as_deref(),
                ));
            }
            tx.operations += 1;
            tx.acks.push((queue, consumer, covered, is_ack));
            self.answer(r.as_deref());
            return None;
        }
        let unit = if is_ack {
            Unit {
                acks: ids.clone(),
                audit: self.ack_audit(&queue, &ids),
                ..Default::default()
            }
        } else {
            let requeue = frame.header("requeue") != Some("false");
            let error = frame
                .header("error")
                .or_else(|| frame.header("message"))
                .map(str::to_owned);
            let mut releases = Vec::with_capacity(covered.len());
            for f in &covered {
                let mut row = self
                    .engine
                    .redelivery(
                        &queue,
                        f.id,
                        f.delivery_count,
                        "negatively acknowledged",
                        error.clone(),
                    )
                    .await;
                if !requeue
                    && row.dead_letter.is_none()
                    && let Ok(dlq) = self.engine.dead_letter_queue_id(&queue).await
                {
                    row = ReleaseRow {
                        id: f.id,
                        increment: 1,
                        dead_letter: Some(dlq),
                        reason: Some("rejected by the consumer (NACK requeue:false)".into()),
                        origin: Some(format!("/queue/{}", queue.name)),
                        last_error: error.clone(),
                        ready_at: None,
                    };
                }
                releases.push(row);
            }
            Unit {
                releases,
                ..Default::default()
            }
        };
        let then = if is_ack {
            Then::Settle(vec![(queue, consumer, ids)])
        } else {
            Then::Released(vec![(queue, consumer, ids)])
        };
        if let Then::Released(v) = &then {
            for (q, _, _) in v {
                q.begin_release();
            }
        }
        self.wait_for(unit, then, r);
        None
    }

    async fn on_commit(&mut self, frame: &Frame) -> Option<End> {
        let r = frame.header("receipt").map(str::to_owned);
        let Some(tx_id) = frame.header("transaction").map(str::to_owned) else {
            return Some(End::error(
                "COMMIT needs a transaction header",
                r.as_deref(),
            ));
        };
        let Some(tx) = self.transactions.remove(&tx_id) else {
            // A COMMIT repeated after a reconnect: answer from the record.
            if let Some(client) = &self.client_id {
                match self
                    .engine
                    .store()
                    .client_tx_committed(client, &tx_id)
                    .await
                {
                    Ok(true) => {
                        self.answer(r.as_deref());
                        return None;
                    }
                    Ok(false) => {
                        return Some(End::Error {
                            message: format!("transaction {tx_id} was not committed"),
                            detail: "it is not open on this connection and no commit of it is on record: if its connection broke before COMMIT was answered, its work was discarded; send it again".into(),
                            receipt: r,
                        });
                    }
                    Err(e) => {
                        return Some(End::error(
                            format!("cannot check transaction {tx_id}: {e}"),
                            r.as_deref(),
                        ));
                    }
                }
            }
            return Some(End::error(
                format!(
                    "transaction {tx_id} is not open on this connection (connect with a client-id to retry commits across connections)"
                ),
                r.as_deref(),
            ));
        };
        let mut unit = Unit {
            inserts: tx.inserts,
            atomic: true,
            ..Default::default()
        };
        let mut settled = Vec::new();
        for (queue, consumer, covered, is_ack) in tx.acks {
            let ids: Vec<i64> = covered.iter().map(|f| f.id).collect();
            if is_ack {
                unit.acks.extend(&ids);
                unit.audit.extend(self.ack_audit(&queue, &ids));
            } else {
                for f in &covered {
                    unit.releases.push(
                        self.engine
                            .redelivery(
                                &queue,
                                f.id,
                                f.delivery_count,
                                "negatively acknowledged",
                                None,
                            )
                            .await,
                    );
                }
            }
            settled.push((queue, consumer, ids));
        }
        if let Some(client) = &self.client_id {
            unit.client_tx = Some((client.clone(), tx_id.clone()));
        }
        self.wait_for(unit, Then::Commit(settled), r);
        None
    }

    /// Discards a transaction's sends and returns its acked messages for redelivery.
    async fn abort(&mut self, tx: Transaction, receipt: Option<String>) {
        if tx.acks.is_empty() {
            if let Some(r) = receipt {
                self.pending
                    .push_back(ready(Ok(ok_unit()), Then::Nothing, Some(r)));
            }
            return;
        }
        let mut releases = Vec::new();
        let mut settled = Vec::new();
        for (queue, consumer, covered, _) in tx.acks {
            for f in &covered {
                releases.push(
                    self.engine
                        .redelivery(
                            &queue,
                            f.id,
                            f.delivery_count,
                            "transaction rolled back",
                            None,
                        )
                        .await,
                );
            }
            queue.begin_release();
            settled.push((queue, consumer, covered.iter().map(|f| f.id).collect()));
        }
        self.wait_for(
            Unit {
                releases,
                ..Default::default()
            },
            Then::Released(settled),
            receipt,
        );
    }

    /// Handles a completed write, in frame order. Returns an End when the connection must close.
    fn complete(&mut self, done: Completion) -> Option<End> {
        let receipt = done.receipt.clone();
        let failure = self.settle_only_inner(&done);
        if let Some(message) = failure {
            return Some(End::Error {
                message,
                detail: String::new(),
                receipt,
            });
        }
        if let Some(r) = receipt {
            let mut f = receipt_frame(&r);
            if let (Then::Send, Ok(UnitOutcome::Committed { inserted, .. })) =
                (&done.then, &done.result)
            {
                match inserted.first() {
                    Some(InsertOutcome::Stored(id)) => f.push_header("message-id", id.to_string()),
                    Some(InsertOutcome::Duplicate(id)) => {
                        f.push_header("duplicate", "true");
                        if let Some(id) = id {
                            f.push_header("message-id", id.to_string());
                        }
                    }
                    None => {}
                }
            }
            self.send_frame(f);
        }
        None
    }

    fn settle_only(&mut self, done: Completion) {
        let _ = self.settle_only_inner(&done);
    }

    /// Applies a completed write to the queues' bookkeeping; returns an error message if the
    /// client must be told it failed.
    fn settle_only_inner(&mut self, done: &Completion) -> Option<String> {
        let (ok, message, lost): (bool, Option<String>, Vec<i64>) = match &done.result {
            Ok(UnitOutcome::Committed {
                lost_acks,
                lost_releases,
                ..
            }) => {
                let lost: Vec<i64> = lost_acks.iter().chain(lost_releases).copied().collect();
                let msg = (!lost.is_empty()).then(|| {
                    format!(
                        "acknowledgement not applied: message(s) {} are no longer held by this broker (the node's lease lapsed); they will be redelivered",
                        lost.iter().map(|i| format!("ID:{i}")).collect::<Vec<_>>().join(",")
                    )
                });
                (true, msg, lost)
            }
            Ok(UnitOutcome::AlreadyCommitted) => (true, None, vec![]),
            Ok(UnitOutcome::Rejected(why)) => (false, Some(why.clone()), vec![]),
            Err(WriteError::Unknown(m)) => (
                false,
                Some(format!(
                    "the outcome of this write is unknown ({m}); with a client-id, retry the COMMIT to learn it, or resend with a dedup-id"
                )),
                vec![],
            ),
            Err(WriteError::Failed(m)) => (
                false,
                Some(format!(
                    "not written: {m}; nothing was committed, send it again"
                )),
                vec![],
            ),
        };
        let _ = lost;
        match &done.then {
            Then::Nothing | Then::Send => {}
            Then::Settle(list) | Then::Commit(list) => {
                for (queue, consumer, ids) in list {
                    if ok {
                        for id in ids {
                            self.delivered.remove(id);
                            self.delivered_at.remove(id);
                        }
                    }
                    queue.finish_settle(
                        *consumer,
                        ids,
                        if ok { Settled::Done } else { Settled::Failed },
                    );
                }
            }
            Then::Released(list) => {
                for (queue, consumer, ids) in list {
                    if ok {
                        for id in ids {
                            self.delivered.remove(id);
                            self.delivered_at.remove(id);
                        }
                    }
                    queue.finish_settle(
                        *consumer,
                        ids,
                        if ok { Settled::Done } else { Settled::Failed },
                    );
                    queue.release_done();
                }
            }
        }
        message
    }

    fn deliver(&mut self, event: SessionEvent) {
        let SessionEvent::Deliver(d) = event;
        let Some(sub) = self.subs.get(d.subscription.as_ref()) else {
            return;
        };
        if sub.consumer != d.consumer {
            return;
        }
        let mut frame = message_frame(
            &d.message,
            &d.queue,
            &d.subscription,
            self.version != Version::V1_2,
        );
        let id = d.message.id.0;
        let mut traced = None;
        if let (Some(otel), Some(tp)) = (self.engine.otel(), d.message.traceparent.as_deref()) {
            let dest = format!("/{}/{}", d.queue.kind.as_str(), d.queue.name);
            let message_id = d.message.message_id().to_string();
            if let Some(delivery) =
                otel.deliver(&dest, &message_id, tp, d.message.tracestate.as_deref())
            {
                frame.headers.retain(|(k, _)| k != "traceparent");
                frame.push_header("traceparent", delivery.clone());
                traced = Some(delivery);
            }
        }
        let m = self.engine.metrics();
        d.queue.counters.delivered.inc();
        if d.message.delivery_count > 0 {
            d.queue.counters.redelivered.inc();
        }
        m.enqueue_to_delivery
            .observe((postbus_store::clock::now_ms() - d.message.sent_at).max(0) as f64 / 1000.0);
        if sub.ack == AckMode::Auto {
            let note = AutoAckNote {
                queue: d.queue.clone(),
                consumer: d.consumer,
                id,
            };
            let _ = self.out.send(Out::AutoAck(frame, note));
        } else {
            self.delivered.insert(id, d.subscription.to_string());
            self.delivered_at
                .insert(id, (std::time::Instant::now(), traced));
            self.send_frame(frame);
        }
    }

    /// An auto-ack MESSAGE was written: acknowledge it.
    fn auto_ack(&mut self, note: AutoAckNote) {
        if note
            .queue
            .begin_settle(note.consumer, note.id, false)
            .is_err()
        {
            return;
        }
        let audit = self.ack_audit(&note.queue, &[note.id]);
        note.queue.counters.acked.inc();
        let then = Then::Settle(vec![(note.queue, note.consumer, vec![note.id])]);
        self.wait_for(
            Unit {
                acks: vec![note.id],
                audit,
                ..Default::default()
            },
            then,
            None,
        );
    }

    /// Ends everything the connection holds: open transactions are rolled back (their acked
    /// messages go back), consumers are removed (their in-flight messages go back).
    /// Sends what a queue holds now, without taking it: its deliverable messages in delivery
    /// order (ungrouped ones by priority and age, then grouped ones by age) that pass the
    /// selector, as MESSAGE frames without an `ack` header, then an end marker (a MESSAGE with
    /// `browser:end` and an empty body, as ActiveMQ sends). At most
    /// `broker.max_browse_messages`; the end marker says `browse-truncated:true` if it stopped
    /// there.
    fn start_browse(
        &mut self,
        id: String,
        queue: Arc<QueueRuntime>,
        selector: Option<Arc<ConsumerSelector>>,
    ) {
        const PAGE: i64 = 200;
        let engine = self.engine.clone();
        let out = self.out.clone();
        let ack_by_id = self.version != Version::V1_2;
        let limit = engine.config().max_browse_messages;
        let sub = id.clone();
        let task = tokio::spawn(async move {
            let mut sent = 0usize;
            let mut truncated = false;
            'kinds: for grouped in [false, true] {
                let mut after: (i16, i64) = (10, 0);
                loop {
                    let filter = selector.as_ref().map(|s| &s.filter);
                    let page = match engine
                        .store()
                        .browse(queue.id, grouped, after, PAGE, filter)
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = out.send(Out::Frame(error_frame(
                                &format!("browsing {} failed", queue.name),
                                &format!("{e}; subscribe again to browse from the start"),
                                None,
                            )));
                            return;
                        }
                    };
                    let n = page.len();
                    for m in page {
                        after = (m.priority, m.id.0);
                        if selector.as_ref().is_some_and(|s| !s.matches(&m)) {
                            continue;
                        }
                        if sent >= limit {
                            truncated = true;
                            break 'kinds;
                        }
                        let mut f = message_frame(&m, &queue, &sub, ack_by_id);
                        f.headers.retain(|(k, _)| k != "ack");
                        f.push_header("browser", "true");
                        if out.send(Out::Frame(f)).is_err() {
                            return;
                        }
                        sent += 1;
                    }
                    if (n as i64) < PAGE {
                        break;
                    }
                }
            }
            let prefix = if queue.kind == DestinationKind::TempQueue {
                "temp-queue"
            } else {
                "queue"
            };
            let mut end = Frame::new(Command::Message)
                .with_header("subscription", sub.clone())
                .with_header("destination", format!("/{prefix}/{}", queue.name))
                .with_header("message-id", format!("browse-end:{sub}"))
                .with_header("browser", "end");
            if truncated {
                end.push_header("browse-truncated", "true");
            }
            let _ = out.send(Out::Frame(end));
        });
        self.browses.insert(id, task);
    }

    /// Resolves `/temp-queue/NAME`: a name this connection gave (created on first use), or
    /// the global name `tmp.<node>.<connection>.<name>` of any connection's temporary queue.
    /// Returns the queue and whether it is this connection's.
    async fn temp_queue(&mut self, name: &str) -> Result<(Arc<QueueRuntime>, bool), String> {
        let local = match parse_temp_global(name) {
            Some((node, conn, local)) if node == self.engine.node().0 && conn == self.conn => {
                local.to_owned()
            }
            Some(_) => {
                let q = self
                    .engine
                    .temp_queue(name, false)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok((q, false));
            }
            None => name.to_owned(),
        };
        if let Some(q) = self.temp_queues.get(&local) {
            return Ok((q.clone(), true));
        }
        let global = self.engine.temp_queue_name(self.conn, &local);
        let q = self
            .engine
            .temp_queue(&global, true)
            .await
            .map_err(|e| e.to_string())?;
        self.temp_queues.insert(local, q.clone());
        Ok((q, true))
    }

    async fn teardown(&mut self) {
        for label in self.producing.drain() {
            self.engine
                .metrics()
                .producers
                .with_label_values(&[label.as_str()])
                .dec();
        }
        for (_, task) in self.browses.drain() {
            task.abort();
        }
        let txs: Vec<Transaction> = self.transactions.drain().map(|(_, t)| t).collect();
        for tx in txs {
            self.abort(tx, None).await;
        }
        let subs: Vec<Subscription> = self.subs.drain().map(|(_, s)| s).collect();
        for sub in subs {
            self.remove_consumer(sub, None);
        }
        while let Some(done) = self.pending.next().await {
            self.settle_only(done);
        }
        for (_, q) in self.temp_queues.drain() {
            if let Err(e) = self.engine.drop_temp_queue(q.id).await {
                tracing::warn!(queue = %q.name, error = %e, "deleting a temporary queue failed; it is removed when this broker restarts");
            }
        }
    }
}

/// Builds the MESSAGE frame for a delivery (header mapping of docs/stomp.md). `ack_by_id`:
/// the client acknowledges by `message-id` (STOMP 1.0 and 1.1), so a topic copy's
/// `message-id` must be the copy's own id rather than the published message's.
pub fn message_frame(
    m: &StoredMessage,
    queue: &QueueRuntime,
    subscription: &str,
    ack_by_id: bool,
) -> Frame {
    let ack = m.id.to_string();
    let message_id = if ack_by_id {
        ack.clone()
    } else {
        m.message_id().to_string()
    };
    let destination = match (&m.topic, queue.kind) {
        (Some(topic), _) => format!("/topic/{topic}"),
        (None, DestinationKind::TempQueue) => format!("/temp-queue/{}", queue.name),
        (None, _) => format!("/queue/{}", queue.name),
    };
    let mut f = Frame::new(Command::Message)
        .with_header("subscription", subscription)
        .with_header("message-id", message_id)
        .with_header("destination", destination)
        .with_header("ack", ack);
    if let Some(ct) = &m.content_type {
        f.push_header("content-type", ct.clone());
    }
    f.push_header("persistent", if m.persistent { "true" } else { "false" });
    f.push_header("priority", m.priority.to_string());
    f.push_header("timestamp", m.sent_at.to_string());
    f.push_header("expires", m.expires_at.to_string());
    f.push_header(
        "redelivered",
        if m.delivery_count > 0 {
            "true"
        } else {
            "false"
        },
    );
    f.push_header("JMSXDeliveryCount", (m.delivery_count + 1).to_string());
    let optional = [
        ("correlation-id", &m.correlation_id),
        ("reply-to", &m.reply_to),
        ("type", &m.jms_type),
        ("JMSXGroupID", &m.group_id),
        ("JMSXUserID", &m.user_id),
        ("traceparent", &m.traceparent),
        ("tracestate", &m.tracestate),
        ("dlq-reason", &m.dlq_reason),
        ("original-destination", &m.original_destination),
        ("last-error", &m.last_error),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            f.push_header(name, v.clone());
        }
    }
    if let Some(seq) = m.group_seq {
        f.push_header("JMSXGroupSeq", seq.to_string());
    }
    for (name, value) in &m.properties.0 {
        f.push_header(name.clone(), value.to_string());
    }
    if let Some(types) = m.properties.types_header() {
        f.push_header(postbus_model::properties::TYPES_HEADER, types);
    }
    f.with_body(m.body.clone())
}
