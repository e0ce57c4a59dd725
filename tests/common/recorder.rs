//! A TCP proxy in front of the rig's moto that records every HTTP request the agent sends through
//! it (method, target, headers, body), and changes nothing: what the agent really asked AWS for,
//! for tests that check each call against a policy. Requests are parsed from the client's byte
//! stream as it passes (keep-alive connections carry several); bodies are sized by
//! `Content-Length` or chunked encoding.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as it went to moto.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path and query string.
    pub target: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Recorder {
    pub url: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Recorder {
    pub async fn start(upstream_url: &str) -> Recorder {
        let upstream = upstream_url.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(relay(client, upstream.clone(), log.clone()));
            }
        });
        Recorder { url, seen }
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

async fn relay(client: TcpStream, upstream: String, log: Arc<Mutex<Vec<Request>>>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            pending.extend_from_slice(&buf[..read]);
            while let Some((request, used)) = parse(&pending) {
                log.lock().unwrap().push(request);
                pending.drain(..used);
            }
            if server_write.write_all(&buf[..read]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    });
    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    up.abort();
}

/// The first whole request in `bytes`, and how many bytes it took; `None` until it is all there.
/// (The fault-injecting proxy, `super::proxy`, reads requests with it too.)
pub fn parse(bytes: &[u8]) -> Option<(Request, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let start = end + 4;
    let (body, used) = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(&bytes[start..]).map(|(body, n)| (body, start + n))?
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = bytes.get(start..start + length)?.to_vec();
        (body, start + length)
    };
    let request = Request {
        method,
        target,
        headers,
        body,
    };
    Some((request, used))
}

/// A chunked body and the bytes it took (trailers included); `None` until it is all there.
fn dechunk(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + bytes[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&bytes[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then the empty line.
            let rest = bytes.get(at..)?;
            if rest.starts_with(b"\r\n") {
                return Some((body, at + 2));
            }
            let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
            return Some((body, at + end + 4));
        }
        body.extend_from_slice(bytes.get(at..at + size)?);
        at += size + 2;
    }
}
