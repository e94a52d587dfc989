//! A TCP fault proxy for the fault suite (this kernel has no tc netem): clients connect to
//! the proxy, which forwards to the broker and, when told, resets connections with a TCP RST
//! (SO_LINGER 0): in the middle of the next client frame (after part of it went through), or
//! after a client's COMMIT reached the broker, dropping the broker's answer (the client then
//! cannot know whether its transaction committed; in fact it did).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the connections it forwards.
#[derive(Default)]
struct Faults {
    /// Connections to reset in the middle of their next client frame.
    mid_frame: AtomicUsize,
    /// Connections to reset right after their next COMMIT was forwarded.
    after_commit: AtomicUsize,
    /// Resets done.
    resets: AtomicUsize,
}

/// A running proxy.
pub struct FaultProxy {
    pub addr: String,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Faults::default());
        let target = target.to_owned();
        let f = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, f) = (target.clone(), f.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        forward(client, server, f).await;
                    }
                });
            }
        });
        FaultProxy { addr, faults, task }
    }

    /// The next `n` client frames that cross the proxy (from different connections or not)
    /// are cut: part of the frame is forwarded, then both sides get a RST.
    pub fn reset_mid_frame(&self, n: usize) {
        self.faults.mid_frame.fetch_add(n, Ordering::SeqCst);
    }

    /// The next `n` COMMIT frames reach the broker whole, then their connection is reset
    /// before the broker's answer can reach the client.
    pub fn reset_after_commit(&self, n: usize) {
        self.faults.after_commit.fetch_add(n, Ordering::SeqCst);
    }

    /// How many connections were reset.
    pub fn resets(&self) -> usize {
        self.faults.resets.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes one unit of a fault budget, if any is left.
fn take(budget: &AtomicUsize) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Resets both sides: SO_LINGER 0 makes the close a RST. (tokio deprecates `set_linger`
/// because a non-zero linger blocks the thread on close; a zero one does not: it discards and
/// resets at once.)
#[allow(deprecated)]
fn reset(a: TcpStream, b: TcpStream, faults: &Faults) {
    let _ = a.set_linger(Some(std::time::Duration::ZERO));
    let _ = b.set_linger(Some(std::time::Duration::ZERO));
    faults.resets.fetch_add(1, Ordering::SeqCst);
    drop(a);
    drop(b);
}

async fn forward(mut client: TcpStream, mut server: TcpStream, faults: Arc<Faults>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = client.read(&mut up) => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &up[..n];
                if n > 4 && faults.mid_frame.load(Ordering::SeqCst) > 0 && take(&faults.mid_frame) {
                    // Half of what the client sent goes through: a frame cut in the middle.
                    let _ = server.write_all(&chunk[..n / 2]).await;
                    return reset(client, server, &faults);
                }
                let commit = chunk.windows(7).any(|w| w == b"COMMIT\n");
                if server.write_all(chunk).await.is_err() {
                    break;
                }
                if commit && faults.after_commit.load(Ordering::SeqCst) > 0 && take(&faults.after_commit) {
                    // The broker has the COMMIT; the client never gets its answer: what the
                    // broker says for the next 50 ms (time to commit) is dropped, then reset.
                    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
                    loop {
                        tokio::select! {
                            r = server.read(&mut down) => if matches!(r, Ok(0) | Err(_)) { break },
                            _ = tokio::time::sleep_until(until) => break,
                        }
                    }
                    return reset(client, server, &faults);
                }
            }
            r = server.read(&mut down) => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if client.write_all(&down[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.shutdown().await;
    let _ = server.shutdown().await;
}
