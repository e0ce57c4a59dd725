//! Throttling and transient errors are retried with backoff, and the retries are bounded.
//! A small proxy in front of the rig's moto answers the first requests with SSM's real
//! ThrottlingException (or drops the connection), then forwards to moto.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use common::{unique_prefix, Rig, Scratch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Fault {
    Throttle,
    Drop,
}

/// Starts the proxy; returns its URL and the count of connections it has taken.
async fn faulty_proxy(
    upstream: String,
    fault: Fault,
    failures: usize,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if n >= failures {
                    let mut server = TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
                read_request(&mut client).await;
                if let Fault::Throttle = fault {
                    let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                    let response = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                         X-Amzn-ErrorType: ThrottlingException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(response.as_bytes()).await;
                }
            });
        }
    });
    (url, count)
}

async fn read_request(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }
}

async fn setup(test: &str) -> (Rig, Scratch, String) {
    let rig = Rig::get();
    let prefix = unique_prefix(test);
    rig.put(
        &format!("{prefix}/TOKEN"),
        "retry-secret-8e8e",
        ParameterType::SecureString,
    )
    .await;
    (rig, Scratch::new(), prefix)
}

fn config(s: &Scratch, rig: &Rig, endpoint: &str, prefix: &str) {
    s.config(
        rig,
        &format!(
            "project: orange\nworkdir: {{workdir}}\naws:\n  endpoint_url: {endpoint}\n\
             env:\n  parameters:\n    - name: {prefix}/TOKEN\n"
        ),
    );
}

fn moto_addr(rig: &Rig) -> String {
    rig.moto_url.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn throttling_is_retried_until_it_passes() {
    let (rig, s, prefix) = setup("throttled").await;
    let (url, count) = faulty_proxy(moto_addr(&rig), Fault::Throttle, 2).await;
    config(&s, &rig, &url, &prefix);
    let run = tokio::task::spawn_blocking(move || (s.agent(&rig, &["sync"]), s))
        .await
        .unwrap();
    run.0.expect(0);
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "two throttled attempts, then one that passed"
    );
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let (rig, s, prefix) = setup("dropped").await;
    let (url, count) = faulty_proxy(moto_addr(&rig), Fault::Drop, 2).await;
    config(&s, &rig, &url, &prefix);
    let run = tokio::task::spawn_blocking(move || (s.agent(&rig, &["sync"]), s))
        .await
        .unwrap();
    run.0.expect(0);
    assert!(count.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn retries_are_bounded_and_the_failure_names_the_parameter() {
    let (rig, s, prefix) = setup("bounded").await;
    let (url, count) = faulty_proxy(moto_addr(&rig), Fault::Throttle, usize::MAX).await;
    config(&s, &rig, &url, &prefix);
    let started = Instant::now();
    let (run, s) = tokio::task::spawn_blocking(move || (s.agent(&rig, &["sync"]), s))
        .await
        .unwrap();
    run.expect(1);
    assert_eq!(
        count.load(Ordering::SeqCst),
        kicky_agent::aws::MAX_ATTEMPTS as usize
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.stderr
            .contains(&format!("failed to read parameter {prefix}/TOKEN")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("ThrottlingException"), "{}", run.stderr);
    assert!(!s.workdir().join(".env").exists());
}
