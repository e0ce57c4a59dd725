//! Readiness probed from the host: a service whose image carries no curl (Spring Boot's buildpack
//! images, distroless ones) has no healthcheck, and "running for a second" is not "listening".
//! A `ready:` probe, in the compose file's `x-kicky-agent` extension of the service or in the
//! agent's `compose.ready`, is run by the agent itself on the container's address: an HTTP GET
//! (status, and a text its body must hold), a TCP connect, or a command run in the container.
//!
//! The probe talks only to the container's own address (the host's loopback for
//! `network_mode: host`), follows no redirect (an application could send it anywhere, instance
//! metadata included), sends nothing but the request line and `Host`, and reads at most
//! [`MAX_BODY`] of the answer, each attempt bounded by the probe's timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use tokio::net::TcpStream;

use super::api::{printable, Container, Engine};
pub use crate::config::probe::{Check, Probe};

/// The most of an HTTP answer's body the probe reads (and searches for `body`).
pub const MAX_BODY: usize = 64 * 1024;

/// The address the probe reaches the container at: the host's loopback when it shares the
/// host's network, else its first address on its networks.
pub fn address(container: &Container) -> Option<IpAddr> {
    match container.host_network {
        true => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        false => container.addresses.first().copied(),
    }
}

/// One attempt, bounded by the probe's timeout: `Err` says why the service is not ready, in words
/// fit for a log line (the application's answer is made printable and cut short).
pub async fn attempt(
    engine: &impl Engine,
    container: &Container,
    probe: &Probe,
) -> Result<(), String> {
    let run = async {
        match &probe.check {
            Check::Exec { command } => exec(engine, container, command).await,
            Check::Tcp { port } => {
                let at = socket(container, *port)?;
                TcpStream::connect(at)
                    .await
                    .map(drop)
                    .map_err(|err| format!("connecting to {at}: {err}"))
            }
            Check::Http {
                port,
                path,
                status,
                body,
            } => {
                let at = socket(container, *port)?;
                let (code, text) = get(at, path).await?;
                judge_http(code, &text, *status, body.as_deref())
            }
        }
    };
    match tokio::time::timeout(probe.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer in {:?}", probe.timeout)),
    }
}

fn socket(container: &Container, port: u16) -> Result<SocketAddr, String> {
    address(container)
        .map(|ip| SocketAddr::new(ip, port))
        .ok_or_else(|| "the container has no address to probe (no network)".to_string())
}

async fn exec(
    engine: &impl Engine,
    container: &Container,
    command: &[String],
) -> Result<(), String> {
    match engine.exec(&container.id, command).await {
        Ok((0, _)) => Ok(()),
        Ok((code, output)) if output.is_empty() => Err(format!("the command exited {code}")),
        Ok((code, output)) => Err(format!("the command exited {code}: {output}")),
        Err(err) => Err(format!("could not run the command: {err}")),
    }
}

/// A GET of `path` at `at`, over one HTTP/1.1 connection: the status and the start of the body.
async fn get(at: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(at)
        .await
        .map_err(|err| format!("connecting to {at}: {err}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|err| format!("HTTP to {at}: {err}"))?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, at.to_string())
        .header(http::header::USER_AGENT, "kicky-agent ready probe")
        .body(Empty::<Bytes>::new())
        .map_err(|err| format!("the request for {path}: {err}"))?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("GET {path} at {at}: {err}"))?;
        let code = response.status().as_u16();
        // Past the limit the body is cut, not refused: what it must hold is in its start.
        let mut body = Limited::new(response.into_body(), MAX_BODY);
        let mut read = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        read.extend_from_slice(data);
                    }
                }
                Err(_) => break,
            }
        }
        Ok((code, String::from_utf8_lossy(&read).into_owned()))
    }
    .await;
    driver.abort();
    answer
}

/// Whether an HTTP answer says ready.
fn judge_http(
    code: u16,
    text: &str,
    status: Option<u16>,
    body: Option<&str>,
) -> Result<(), String> {
    let status_ok = match status {
        Some(wanted) => code == wanted,
        None => (200..300).contains(&code),
    };
    if !status_ok {
        return Err(format!("HTTP {code}: {}", printable(text, 120)));
    }
    match body {
        Some(wanted) if !text.contains(wanted) => Err(format!(
            "HTTP {code} without {wanted:?}: {}",
            printable(text, 120)
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_answer_is_ready_on_its_status_and_body() {
        let up = r#"{"status":"UP"}"#;
        type Case<'a> = (
            u16,
            &'a str,
            Option<u16>,
            Option<&'a str>,
            Result<(), &'a str>,
        );
        let cases: &[Case] = &[
            (200, up, None, Some(r#""status":"UP""#), Ok(())),
            (204, "", None, None, Ok(())),
            (
                200,
                r#"{"status":"DOWN"}"#,
                None,
                Some(r#""status":"UP""#),
                Err("HTTP 200 without"),
            ),
            (503, up, None, None, Err("HTTP 503")),
            (301, "", None, None, Err("HTTP 301")),
            (418, "teapot", Some(418), None, Ok(())),
            (200, "", Some(418), None, Err("HTTP 200")),
        ];
        for (code, text, status, body, want) in cases {
            let got = judge_http(*code, text, *status, *body);
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(part), Err(message)) => assert!(message.contains(part), "{message}"),
                _ => panic!("{code} {text}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn the_address_is_the_containers_own_or_the_hosts_loopback() {
        let mut c = Container::default();
        assert_eq!(address(&c), None);
        c.addresses = vec!["172.18.0.5".parse().unwrap(), "172.19.0.2".parse().unwrap()];
        assert_eq!(address(&c), Some("172.18.0.5".parse().unwrap()));
        c.host_network = true;
        assert_eq!(address(&c), Some("127.0.0.1".parse().unwrap()));
    }
}
