//! A service's readiness probe as written (`ready:`, in the compose file's `x-kicky-agent`
//! extension of a service or in the config's `compose.ready`), checked: exactly one of an HTTP
//! GET, a TCP connect or a command, with an interval and a per-attempt timeout. The engine runs
//! it (`engine::ready`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::DurationText;

/// How a service's readiness is probed, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub check: Check,
    /// Between two attempts while the service is not ready.
    pub interval: Duration,
    /// The bound of one attempt.
    pub timeout: Duration,
}

/// One kind of probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// A GET of `path` on the container's `port`; ready on `status` (any 2xx when unset) with
    /// `body` (when set) in the start of the answer.
    Http {
        port: u16,
        path: String,
        status: Option<u16>,
        body: Option<String>,
    },
    /// A TCP connection to the container's `port` is accepted.
    Tcp { port: u16 },
    /// The command, run in the container (not through a shell), exits 0.
    Exec { command: Vec<String> },
}

/// `ready:` as written (the agent's config and the compose file's `x-kicky-agent`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub http: Option<RawHttp>,
    pub tcp: Option<RawTcp>,
    pub exec: Option<Vec<String>>,
    /// Default 1s.
    pub interval: Option<DurationText>,
    /// Default 2s.
    pub timeout: Option<DurationText>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub port: u16,
    /// Default `/`.
    pub path: Option<String>,
    pub status: Option<u16>,
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub port: u16,
}

impl TryFrom<RawProbe> for Probe {
    type Error = String;

    fn try_from(raw: RawProbe) -> Result<Probe, String> {
        let check = match (raw.http, raw.tcp, raw.exec) {
            (Some(http), None, None) => {
                let path = http.path.unwrap_or_else(|| "/".to_string());
                if !path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(format!(
                        "http.path {path:?} must start with `/` and hold no space or control character"
                    ));
                }
                if let Some(status) = http.status.filter(|s| !(100..=599).contains(s)) {
                    return Err(format!("http.status {status} is not an HTTP status"));
                }
                Check::Http {
                    port: nonzero(http.port)?,
                    path,
                    status: http.status,
                    body: http.body,
                }
            }
            (None, Some(tcp), None) => Check::Tcp {
                port: nonzero(tcp.port)?,
            },
            (None, None, Some(command)) if !command.is_empty() => Check::Exec { command },
            (None, None, Some(_)) => return Err("exec needs a command".to_string()),
            _ => {
                return Err("a ready probe has exactly one of `http`, `tcp` and `exec`".to_string())
            }
        };
        Ok(Probe {
            check,
            interval: duration(raw.interval, "interval", Duration::from_secs(1))?,
            timeout: duration(raw.timeout, "timeout", Duration::from_secs(2))?,
        })
    }
}

fn nonzero(port: u16) -> Result<u16, String> {
    match port {
        0 => Err("port 0 is not a port".to_string()),
        port => Ok(port),
    }
}

fn duration(text: Option<DurationText>, key: &str, default: Duration) -> Result<Duration, String> {
    match text.map(|d| d.0) {
        None => Ok(default),
        Some(d) if !d.is_zero() && d <= Duration::from_secs(300) => Ok(d),
        Some(d) => Err(format!("{key} {d:?} is not between 1ms and 5m")),
    }
}

impl Probe {
    /// What it checks, for `status` and the logs: `http :8080/actuator/health`.
    pub fn describe(&self) -> String {
        match &self.check {
            Check::Http { port, path, .. } => format!("http :{port}{path}"),
            Check::Tcp { port } => format!("tcp :{port}"),
            Check::Exec { command } => format!("exec {}", shell_words::join(command)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Probe, String> {
        let raw: RawProbe = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        Probe::try_from(raw)
    }

    #[test]
    fn probes_are_read_with_their_defaults_and_refused_when_ambiguous() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                "http: {port: 8080, path: /actuator/health, body: '\"status\":\"UP\"'}",
                Ok("http :8080/actuator/health"),
            ),
            ("http: {port: 80}", Ok("http :80/")),
            ("tcp: {port: 5432}", Ok("tcp :5432")),
            (
                "exec: [pg_isready, -U, app user]",
                Ok("exec pg_isready -U 'app user'"),
            ),
            ("{}", Err("exactly one of")),
            ("{http: {port: 80}, tcp: {port: 80}}", Err("exactly one of")),
            ("exec: []", Err("needs a command")),
            ("tcp: {port: 0}", Err("port 0")),
            ("tcp: {port: 70000}", Err("invalid value")),
            ("http: {port: 80, path: health}", Err("must start with `/`")),
            ("http: {port: 80, path: '/a b'}", Err("must start with `/`")),
            ("http: {port: 80, status: 42}", Err("not an HTTP status")),
            (
                "{tcp: {port: 80}, interval: soon}",
                Err("\"soon\" is not a duration"),
            ),
            (
                "{tcp: {port: 80}, timeout: 0s}",
                Err("timeout 0ns is not between"),
            ),
            (
                "{tcp: {port: 80}, retries: 3}",
                Err("unknown field `retries`"),
            ),
        ];
        for (yaml, want) in cases {
            let got = parse(yaml);
            match (want, &got) {
                (Ok(describe), Ok(probe)) => assert_eq!(probe.describe(), *describe, "{yaml}"),
                (Err(part), Err(message)) => assert!(message.contains(part), "{yaml}: {message}"),
                _ => panic!("{yaml}: {got:?}, wanted {want:?}"),
            }
        }
        let probe = parse("{tcp: {port: 80}}").unwrap();
        assert_eq!(
            (probe.interval, probe.timeout),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        let probe = parse("{tcp: {port: 80}, interval: 250ms, timeout: 3s}").unwrap();
        assert_eq!(
            (probe.interval, probe.timeout),
            (Duration::from_millis(250), Duration::from_secs(3))
        );
    }
}
