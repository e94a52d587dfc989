//! A small async STOMP 1.2 client over TCP, for the postbus CLI, the test suite and the bench
//! tool. It works with any STOMP 1.2 broker (the bench drives RabbitMQ and ActiveMQ with it).
//!
//! The client is deliberately plain: one connection, `&mut self` methods, no background task.
//! Frames that arrive while waiting for a RECEIPT (MESSAGEs) are kept in order for [`Client::recv`].

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use postbus_stomp::{Command, Frame, Item, Limits, StompCodec, Version};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source} (is the broker running and listening there?)")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the broker sent ERROR: {message}{}", if .detail.is_empty() { String::new() } else { format!(" ({})", .detail.trim()) })]
    Broker {
        message: String,
        detail: String,
        frame: Box<Frame>,
    },
    #[error("the connection closed")]
    Closed,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Codec(#[from] postbus_stomp::CodecError),
}

impl ClientError {
    /// The ERROR frame's `message` header, when the broker refused something.
    pub fn broker_message(&self) -> Option<&str> {
        match self {
            ClientError::Broker { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// CONNECT options.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub login: Option<String>,
    pub passcode: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
    /// (client sends every ms, client wants every ms); (0, 0) = no heart-beats.
    pub heartbeat: (u32, u32),
    /// Extra CONNECT headers.
    pub headers: Vec<(String, String)>,
}

/// One STOMP connection.
pub struct Client {
    reader: FramedRead<ReadHalf<TcpStream>, StompCodec>,
    writer: FramedWrite<WriteHalf<TcpStream>, StompCodec>,
    /// MESSAGE frames received while waiting for something else.
    backlog: VecDeque<Frame>,
    /// RECEIPTs received while waiting for something else.
    receipts: VecDeque<Frame>,
    next_receipt: u64,
    /// The CONNECTED frame.
    pub connected: Frame,
}

impl Client {
    /// Connects and performs the STOMP handshake (asking for 1.2).
    pub async fn connect(addr: &str, opts: &ConnectOptions) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (r, w) = tokio::io::split(stream);
        let limits = Limits {
            max_frame_bytes: 64 << 20,
            max_body_bytes: 64 << 20,
            ..Limits::default()
        };
        let mut client = Client {
            reader: FramedRead::new(r, StompCodec::new(limits)),
            writer: FramedWrite::new(w, StompCodec::new(limits)),
            backlog: VecDeque::new(),
            receipts: VecDeque::new(),
            next_receipt: 1,
            connected: Frame::new(Command::Connected),
        };
        let mut f = Frame::new(Command::Connect)
            .with_header("accept-version", "1.2")
            .with_header(
                "host",
                opts.host.clone().unwrap_or_else(|| "localhost".into()),
            )
            .with_header(
                "heart-beat",
                format!("{},{}", opts.heartbeat.0, opts.heartbeat.1),
            );
        if let Some(l) = &opts.login {
            f.push_header("login", l.clone());
        }
        if let Some(p) = &opts.passcode {
            f.push_header("passcode", p.clone());
        }
        if let Some(c) = &opts.client_id {
            f.push_header("client-id", c.clone());
        }
        for (k, v) in &opts.headers {
            f.push_header(k.clone(), v.clone());
        }
        client.writer.send(Item::Frame(f)).await?;
        let reply = client.read_frame().await?;
        match reply.command {
            Command::Connected => {
                client.reader.decoder_mut().set_version(Version::V1_2);
                client.writer.encoder_mut().set_version(Version::V1_2);
                client.connected = reply;
                Ok(client)
            }
            Command::Error => Err(broker_error(reply)),
            other => Err(ClientError::Protocol(format!(
                "expected CONNECTED, got {}",
                other.as_str()
            ))),
        }
    }

    async fn read_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            match self.reader.next().await {
                None => return Err(ClientError::Closed),
                Some(Ok(Item::HeartBeat)) => continue,
                Some(Ok(Item::Frame(f))) => return Ok(f),
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends a frame as is, without waiting for anything.
    pub async fn send_frame(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.writer.send(Item::Frame(frame)).await?;
        Ok(())
    }

    /// Queues a frame without flushing (call [`Client::flush`]); for pipelined producers.
    pub async fn feed_frame(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.writer.feed(Item::Frame(frame)).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        SinkExt::<Item>::flush(&mut self.writer).await?;
        Ok(())
    }

    /// A fresh receipt id.
    pub fn receipt_id(&mut self) -> String {
        let id = format!("r-{}", self.next_receipt);
        self.next_receipt += 1;
        id
    }

    /// Sends a frame with a receipt header and waits for that RECEIPT (returned).
    pub async fn request(&mut self, frame: Frame) -> Result<Frame, ClientError> {
        let id = self.receipt_id();
        self.send_frame(frame.with_header("receipt", id.clone()))
            .await?;
        self.wait_receipt(&id).await
    }

    /// Waits for the RECEIPT with this id; MESSAGEs that arrive meanwhile are kept.
    pub async fn wait_receipt(&mut self, id: &str) -> Result<Frame, ClientError> {
        if let Some(pos) = self
            .receipts
            .iter()
            .position(|r| r.header("receipt-id") == Some(id))
        {
            return Ok(self.receipts.remove(pos).expect("position is valid"));
        }
        self.read_until(|f| f.command == Command::Receipt && f.header("receipt-id") == Some(id))
            .await
    }

    /// Reads frames until one satisfies `wanted`. MESSAGEs and RECEIPTs that do not are kept
    /// for [`Client::recv`] and the receipt waits; an ERROR ends the wait with its message.
    async fn read_until(&mut self, wanted: impl Fn(&Frame) -> bool) -> Result<Frame, ClientError> {
        loop {
            let f = self.read_frame().await?;
            if wanted(&f) {
                return Ok(f);
            }
            match f.command {
                Command::Receipt => self.receipts.push_back(f),
                Command::Message => self.backlog.push_back(f),
                Command::Error => return Err(broker_error(f)),
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected {}",
                        other.as_str()
                    )));
                }
            }
        }
    }

    /// Waits for the next RECEIPT, whatever its id.
    pub async fn next_receipt(&mut self) -> Result<Frame, ClientError> {
        if let Some(r) = self.receipts.pop_front() {
            return Ok(r);
        }
        self.read_until(|f| f.command == Command::Receipt).await
    }

    /// Sends a message and waits for the broker's receipt (the message is committed then).
    pub async fn send(
        &mut self,
        destination: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Result<Frame, ClientError> {
        self.request(send_frame(destination, body, headers)).await
    }

    /// Subscribes and waits for the receipt.
    pub async fn subscribe(
        &mut self,
        destination: &str,
        id: &str,
        ack: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let mut f = Frame::new(Command::Subscribe)
            .with_header("destination", destination)
            .with_header("id", id)
            .with_header("ack", ack);
        for (k, v) in headers {
            f.push_header(*k, *v);
        }
        self.request(f).await.map(|_| ())
    }

    pub async fn unsubscribe(&mut self, id: &str) -> Result<(), ClientError> {
        self.request(Frame::new(Command::Unsubscribe).with_header("id", id))
            .await
            .map(|_| ())
    }

    /// The next MESSAGE.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        if let Some(f) = self.backlog.pop_front() {
            return Ok(f);
        }
        self.read_until(|f| f.command == Command::Message).await
    }

    /// The next MESSAGE within `timeout`, or None.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Frame>, ClientError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// ACKs a message (by its `ack` header) and waits for the receipt.
    pub async fn ack(
        &mut self,
        message: &Frame,
        transaction: Option<&str>,
    ) -> Result<(), ClientError> {
        self.request(settle_frame(Command::Ack, message, transaction))
            .await
            .map(|_| ())
    }

    /// NACKs a message and waits for the receipt.
    pub async fn nack(
        &mut self,
        message: &Frame,
        transaction: Option<&str>,
    ) -> Result<(), ClientError> {
        self.request(settle_frame(Command::Nack, message, transaction))
            .await
            .map(|_| ())
    }

    pub async fn begin(&mut self, tx: &str) -> Result<(), ClientError> {
        self.request(Frame::new(Command::Begin).with_header("transaction", tx))
            .await
            .map(|_| ())
    }

    pub async fn commit(&mut self, tx: &str) -> Result<(), ClientError> {
        self.request(Frame::new(Command::Commit).with_header("transaction", tx))
            .await
            .map(|_| ())
    }

    pub async fn abort(&mut self, tx: &str) -> Result<(), ClientError> {
        self.request(Frame::new(Command::Abort).with_header("transaction", tx))
            .await
            .map(|_| ())
    }

    /// DISCONNECT with a receipt, so everything sent before is settled.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.request(Frame::new(Command::Disconnect))
            .await
            .map(|_| ())
    }

    /// The next frame of any kind (for tests that inspect ERRORs and RECEIPTs themselves).
    pub async fn next_any(&mut self) -> Result<Frame, ClientError> {
        if let Some(f) = self.backlog.pop_front() {
            return Ok(f);
        }
        if let Some(f) = self.receipts.pop_front() {
            return Ok(f);
        }
        self.read_frame().await
    }
}

/// A SEND frame.
pub fn send_frame(destination: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Frame {
    let mut f = Frame::new(Command::Send).with_header("destination", destination);
    for (k, v) in headers {
        f.push_header(*k, *v);
    }
    f.with_body(body)
}

/// An ACK or NACK frame for a received MESSAGE.
pub fn settle_frame(command: Command, message: &Frame, transaction: Option<&str>) -> Frame {
    let id = message
        .header("ack")
        .or_else(|| message.header("message-id"))
        .unwrap_or_default()
        .to_owned();
    let mut f = Frame::new(command).with_header("id", id);
    if let Some(tx) = transaction {
        f.push_header("transaction", tx);
    }
    f
}

fn broker_error(f: Frame) -> ClientError {
    ClientError::Broker {
        message: f.header("message").unwrap_or("").to_owned(),
        detail: String::from_utf8_lossy(&f.body).into_owned(),
        frame: Box::new(f),
    }
}
