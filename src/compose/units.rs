//! Durations and byte sizes as compose reads and prints them.
//!
//! Durations are Go's (`time.ParseDuration`: `1m30s`, `500ms`, `1.5h`) with compose's `d` (24h)
//! and `w` (7d) units (compose-go reads them with `str2duration`); printed as Go prints them
//! (`48h0m0s`), which compose v2 reads back. Sizes follow docker's `RAMInBytes`: a number with an optional binary unit
//! `b`, `k`, `m`, `g`, `t`, `p` (also `kb`, `mib`...), case-insensitive.

use std::time::Duration;

/// Reads a Go duration. Negative durations are refused: no compose field takes one.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total: f64 = 0.0;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            _ => return None,
        };
        match number.split_once('.') {
            None => nanos = nanos.checked_add(number.parse::<u128>().ok()?.checked_mul(scale)?)?,
            Some((whole, fraction)) => {
                let whole: u128 = if whole.is_empty() {
                    0
                } else {
                    whole.parse().ok()?
                };
                nanos = nanos.checked_add(whole.checked_mul(scale)?)?;
                if !fraction.is_empty() {
                    let f: f64 = format!("0.{fraction}").parse().ok()?;
                    total += f * scale as f64;
                }
            }
        }
    }
    let nanos = nanos.checked_add(total.round() as u128)?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Prints a duration as Go's `time.Duration.String` does, which is what compose v2 prints:
/// `1m30s`, `1h0m0s`, `500ms`, `1.5s`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = fraction(nanos % 60_000_000_000, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / unit` with the fractional digits that are not zero.
fn fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let rest = value % unit;
    if rest == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Reads a size in bytes: `512m`, `1gb`, `1.5GiB`, `100`.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let number_len = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(number_len);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    match number.parse::<u64>() {
        Ok(n) => n.checked_mul(scale),
        Err(_) => {
            let n: f64 = number.parse().ok()?;
            let bytes = n * scale as f64;
            (bytes < u64::MAX as f64).then_some(bytes as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let s = |secs: u64| Duration::from_secs(secs);
        assert_eq!(parse_duration("30s"), Some(s(30)));
        assert_eq!(parse_duration("1m30s"), Some(s(90)));
        assert_eq!(parse_duration("1h"), Some(s(3600)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration(".5m"), Some(s(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("2h45m10s"), Some(s(9910)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "10", "1x", "s", "-1s", "1..5s", "1 s", "."] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn compose_day_and_week_units() {
        let h = |hours: u64| Some(Duration::from_secs(hours * 3600));
        for (text, want) in [
            ("1d", h(24)),
            ("2w", h(14 * 24)),
            ("1w2d3h", h(7 * 24 + 2 * 24 + 3)),
            ("1.5d", h(36)),
            ("1d30m", Some(Duration::from_secs(24 * 3600 + 1800))),
        ] {
            assert_eq!(parse_duration(text), want, "{text}");
        }
        // Printed in Go's form, which compose reads back.
        assert_eq!(format_duration(parse_duration("2d").unwrap()), "48h0m0s");
        for bad in ["1D", "1y", "d", "1dd"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_duration_strings() {
        let f = |t: &str| format_duration(parse_duration(t).unwrap());
        assert_eq!(f("90s"), "1m30s");
        assert_eq!(f("1m"), "1m0s");
        assert_eq!(f("1h"), "1h0m0s");
        assert_eq!(f("10s"), "10s");
        assert_eq!(f("1.5s"), "1.5s");
        assert_eq!(f("500ms"), "500ms");
        assert_eq!(f("1500us"), "1.5ms");
        assert_eq!(f("0"), "0s");
        assert_eq!(f("2h0m1.25s"), "2h0m1.25s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("1gb"), Some(1 << 30));
        assert_eq!(parse_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("64k"), Some(64 << 10));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("10b"), Some(10));
        for bad in ["", "m", "1x", "-1m", "1.m", "1 2m"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
