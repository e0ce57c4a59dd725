//! A TCP proxy in front of the rig's moto that injects faults: SSM's real ThrottlingException
//! or S3's SlowDown for the first requests, dropped or reset connections, or a flipped byte in a
//! response body. It also
//! counts connections and the bytes moto sent, to prove what was (not) transferred, and notes
//! each request it passes on, to prove what was (not) asked for. And it can be made to hang at any
//! moment: every request from then on (on new connections and on those already open) is read and
//! never answered, as by a server stopped with SIGSTOP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::recorder::parse;

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Answer the first `n` connections with a ThrottlingException.
    Throttle(usize),
    /// Close the first `n` connections without an answer.
    Drop(usize),
    /// Reset the first `n` connections (TCP RST) once their request is read.
    Reset(usize),
    /// Answer the first `n` connections with S3's 503 SlowDown.
    SlowDown(usize),
    /// Flip one byte of the first response body on every connection.
    Corrupt,
}

pub struct Proxy {
    pub url: String,
    connections: Arc<AtomicUsize>,
    bytes_down: Arc<AtomicUsize>,
    hang: Arc<std::sync::atomic::AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub async fn start(upstream_url: &str, fault: Fault) -> Proxy {
        let upstream = upstream_url.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes_down = Arc::new(AtomicUsize::new(0));
        let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (seen, down, hanging) = (connections.clone(), bytes_down.clone(), hang.clone());
        let asked = requests.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let (upstream, down, hanging) = (upstream.clone(), down.clone(), hanging.clone());
                let asked = asked.clone();
                tokio::spawn(handle(client, upstream, fault, n, down, hanging, asked));
            }
        });
        Proxy {
            url,
            connections,
            bytes_down,
            hang,
            requests,
        }
    }

    /// From now on (`true`), every request is read and never answered.
    pub fn hang(&self, on: bool) {
        self.hang.store(on, Ordering::SeqCst);
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn bytes_down(&self) -> usize {
        self.bytes_down.load(Ordering::SeqCst)
    }

    /// The requests passed on (or held, hanging) so far, in the order they came: `HEAD
    /// /bucket/key`, `POST / AmazonSSM.DescribeParameters` (the JSON APIs' `X-Amz-Target`).
    /// Those a fault answered are not among them.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// The requests in what one connection's client sends, parsed as the recorder parses them; each
/// noted as `METHOD target` and, for the JSON APIs, its `X-Amz-Target`.
#[derive(Default)]
struct Requests {
    unread: Vec<u8>,
}

impl Requests {
    fn feed(&mut self, bytes: &[u8], asked: &Mutex<Vec<String>>) {
        self.unread.extend_from_slice(bytes);
        while let Some((request, used)) = parse(&self.unread) {
            self.unread.drain(..used);
            let mut line = vec![request.method.as_str(), request.target.as_str()];
            line.extend(request.header("x-amz-target"));
            asked.lock().unwrap().push(line.join(" "));
        }
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: String,
    fault: Fault,
    n: usize,
    down: Arc<AtomicUsize>,
    hang: Arc<std::sync::atomic::AtomicBool>,
    asked: Arc<Mutex<Vec<String>>>,
) {
    match fault {
        Fault::Throttle(count) if n < count => {
            let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            let head = "400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                        X-Amzn-ErrorType: ThrottlingException";
            return answer(client, head, body).await;
        }
        Fault::Drop(count) if n < count => {
            read_request(&mut client).await;
            return;
        }
        Fault::Reset(count) if n < count => {
            read_request(&mut client).await;
            // Linger 0: the close sends RST, not FIN (and never blocks, the deprecation's worry).
            #[allow(deprecated)]
            let _ = client.set_linger(Some(std::time::Duration::ZERO));
            return;
        }
        Fault::SlowDown(count) if n < count => {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                        <Message>Please reduce your request rate.</Message></Error>";
            return answer(
                client,
                "503 Slow Down\r\nContent-Type: application/xml",
                body,
            )
            .await;
        }
        _ => {}
    }
    let server = TcpStream::connect(upstream).await.unwrap();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut requests = Requests::default();
        let mut held = false;
        loop {
            let read = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            requests.feed(&buf[..read], &asked);
            // Held: from now on nothing on this connection reaches the server, no answer comes
            // (what the client sends is still read, so each request it makes is noted whole).
            held = held || hang.load(Ordering::SeqCst);
            if !held && server_write.write_all(&buf[..read]).await.is_err() {
                break;
            }
        }
        if held {
            std::future::pending::<()>().await;
        }
        let _ = server_write.shutdown().await;
    });
    let corrupt = matches!(fault, Fault::Corrupt);
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut flipped = !corrupt;
    loop {
        let read = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        down.fetch_add(read, Ordering::SeqCst);
        let chunk = &mut buf[..read];
        if !flipped {
            // Flip the first body byte: find the end of the response head, possibly across reads.
            let offset = head.len();
            head.extend_from_slice(chunk);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let body_start = end + 4;
                if body_start < head.len() {
                    chunk[body_start - offset] ^= 0x01;
                    flipped = true;
                }
            }
        }
        if client_write.write_all(chunk).await.is_err() {
            break;
        }
    }
    up.abort();
}

/// Reads the request, then answers `HTTP/1.1 {head}` (status line and headers) with `body`,
/// and closes.
async fn answer(mut client: TcpStream, head: &str, body: &str) {
    read_request(&mut client).await;
    let response = format!(
        "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
}

/// Reads until one whole request is in (or the client closes).
async fn read_request(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while parse(&buf).is_none() {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
