//! A small hostile ACS: an HTTP/1.1 server on 127.0.0.1 that answers every request with one
//! canned (broken) answer, and counts the requests. It reads each request's head and body,
//! so the client always sees the answer, then serves it as the case asks: whole, cut short,
//! endless, or never finished. It stops when dropped; every answer is bounded in size and
//! time so nothing outlives the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the hostile server answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `status` with `content_type` and `body`, `Content-Length` set.
    Whole {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// `Content-Length: 100 MB` and that many bytes streamed (or until the client hangs up).
    Huge,
    /// `Content-Length` of 1 000 bytes, 10 sent, then the connection held open (bounded).
    NeverFinishes,
    /// A redirect to the same path on another port.
    Redirect(u16),
    /// Nothing at all: the request is read and the connection held open (bounded), a tarpit.
    Silent,
}

pub struct HostileServer {
    pub port: u16,
    requests: Arc<AtomicU64>,
    /// TCP connections accepted (a refused endpoint must not even be connected to).
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// Longest a connection is held open by [`Answer::NeverFinishes`].
const HOLD: Duration = Duration::from_secs(60);
const HUGE: u64 = 100 * 1024 * 1024;

impl HostileServer {
    pub async fn start(answer: Answer) -> Self {
        Self::start_on("127.0.0.1", answer).await
    }

    /// Like [`HostileServer::start`], listening on another loopback address (`127.0.0.2`:
    /// one the operator under test is not allowed to reach).
    pub async fn start_on(address: &str, answer: Answer) -> Self {
        let listener = TcpListener::bind((address, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (counter, accepted) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            // Bounded: a hot-looping client would exhaust the count, not the machine.
            for _ in 0..500 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HOLD, serve(stream, answer, counter)).await;
                });
            }
        });
        Self {
            port,
            requests,
            connections,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, answer: Answer, counter: Arc<AtomicU64>) {
    // Keep-alive: several requests may come on one connection.
    loop {
        let Some(()) = read_request(&mut stream).await else {
            return;
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let keep_going = match &answer {
            Answer::Whole {
                status,
                content_type,
                body,
            } => {
                let head = format!(
                    "HTTP/1.1 {status} Hostile\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await.is_ok()
                    && stream.write_all(body.as_bytes()).await.is_ok()
            }
            Answer::Huge => {
                let head = format!(
                    "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {HUGE}\r\n\r\n{{\"identity\":{{\"id\":\""
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 64 * 1024];
                let mut sent = 0;
                while sent < HUGE {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len() as u64;
                }
                false
            }
            Answer::NeverFinishes => {
                let head = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"identity\"";
                let _ = stream.write_all(head.as_bytes()).await;
                // Held open until the client gives up (or HOLD passes).
                let mut sink = [0u8; 1024];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                false
            }
            Answer::Silent => {
                let mut sink = [0u8; 1024];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                false
            }
            Answer::Redirect(port) => {
                let head = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{port}/identities\r\ncontent-length: 0\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await.is_ok()
            }
        };
        if !keep_going {
            return;
        }
    }
}

/// Reads one request (head, then `content-length` bytes of body); `None` at end of stream.
async fn read_request(stream: &mut TcpStream) -> Option<()> {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 || buffer.len() > 64 * 1024 {
            return None;
        }
        buffer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buffer).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(1024 * 1024)];
    stream.read_exact(&mut body).await.ok()?;
    Some(())
}
