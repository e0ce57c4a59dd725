//! The one place secret values are held and kept out of output.
//!
//! Parameter values, registry passwords and tokens travel as [`Secret`]: its `Debug` and `Display`
//! print a placeholder, so a stray `{:?}` in a log line or an error cannot leak the value. Code that
//! really needs the bytes (the env file writer, an auth header) calls [`Secret::expose`], which is
//! easy to grep for.
//!
//! A value can still reach output as plain text that merely contains it: a health check that
//! prints its connection string, a name or a tag interpolated from a variable. So every value the
//! agent fetched is also *learned* where it arrives ([`Secret::fetched`], [`learn`]): parameters,
//! Secrets Manager secrets, registry passwords and ECR tokens, the values of the env files the
//! agent reads (its own, on disk, and a compose file's `env_file`) and the compose file's
//! secrets. Every text that leaves the process or lands on disk passes through the redactor
//! where it leaves, which masks each learned value as [`MASK`]:
//! - the log, byte for byte (`logging`'s writer), and the error report (`error::report`);
//! - what the commands print, `--json` included: [`outln!`](crate::outln!) and its kin, the only
//!   way to print (clippy refuses `println!` and the like, see `clippy.toml`);
//! - the control socket's answers, systemd's `STATUS=`, the state file's messages, the metrics'
//!   labels, and what a container wrote (`engine::api::printable`, before it is cut to length).
//!
//! `render` masks by where values are used instead, which is exact (`compose::render`), and
//! `iam-policy` prints names from the config only: they print through [`to_stdout_exact`].
//!
//! The state file is written redacted, so a value known only to the process that wrote it never
//! reaches the next one through it.
//!
//! **What is too short to mask**: a value (or a line of a multi-line value) shorter than
//! [`MIN_LEN`] bytes is not learned. `true`, `8080`, `debug` or `1.2.3` are everywhere in the
//! text, and masking them would make every line unreadable; no credential is that short. A value
//! of letters only (`health`, `production`) is masked where it stands as a word, not inside
//! another word (`healthy`).
//! Each value is masked as it is, as each of its lines (trimmed too), and as JSON and Rust's
//! `{:?}` escape it (a quote or a newline in a value is written escaped in the state file,
//! `--json` output and JSON logs). Overlapping values are masked as the union of their spans.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::sync::RwLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind};

/// What a value is printed as where text is redacted. Plain in every format the agent writes: a
/// YAML scalar of its own (where `********` would read as an alias), JSON, a metrics label.
pub const MASK: &str = "<redacted>";

/// Values (and lines of values) shorter than this many bytes are not masked in text.
pub const MIN_LEN: usize = 6;

/// A value that must never reach a log line, an error message, `plan` or `status`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// A value the agent fetched (a parameter, a secret, a token, a file's value): held as a
    /// `Secret`, and learned by the redactor, so that it is masked in every text that leaves the
    /// process.
    pub fn fetched(value: impl Into<String>) -> Self {
        let value = value.into();
        learn(&value);
        Secret(value)
    }

    /// The value itself. Every call site is a place where a secret leaves this type.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// The values to mask, and a matcher of all of them at once.
struct Redactor {
    needles: BTreeSet<String>,
    matcher: Option<AhoCorasick>,
    /// By the matcher's pattern id: whether the needle is a word (see [`is_word`]).
    words: Vec<bool>,
    /// Whether `matcher` knows every needle. Values arrive one by one (a path of a thousand
    /// parameters), so the automaton is built once, when text is next redacted, not per value.
    built: bool,
}

impl Redactor {
    const fn new() -> Redactor {
        Redactor {
            needles: BTreeSet::new(),
            matcher: None,
            words: Vec::new(),
            built: true,
        }
    }

    /// Learns the values (those long enough; see [`MIN_LEN`]).
    fn learn<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) {
        let mut new = false;
        for value in values {
            for form in forms(value) {
                new |= self.needles.insert(form);
            }
        }
        self.built &= !new;
    }

    /// Builds the automaton of every learned form, when it is not built yet. A contiguous NFA:
    /// built in time linear in the needles' length, where a DFA (which the builder may pick
    /// for few patterns) costs their length times the alphabet, minutes for a 64 KiB value.
    fn build(&mut self) {
        if self.built {
            return;
        }
        // Every learned form is a plain string: building the automaton cannot fail.
        self.matcher = AhoCorasickBuilder::new()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(&self.needles)
            .ok();
        self.words = self.needles.iter().map(|n| is_word(n)).collect();
        self.built = true;
    }

    /// `text` with every learned value in it masked; borrowed when there is none.
    fn redact<'t>(&mut self, text: &'t str) -> Cow<'t, str> {
        self.build();
        self.masked(text)
    }

    /// [`Redactor::redact`] once built.
    fn masked<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(text);
        };
        // Every match, overlapping ones included (found in the order they end), merged into
        // spans: a value that overlaps another is masked whole, not cut where the other's mask
        // ends.
        let mut found: Vec<(usize, usize)> = matcher
            .find_overlapping_iter(text)
            .filter(|m| !self.words[m.pattern()] || stands_alone(text, m.start(), m.end()))
            .map(|m| (m.start(), m.end()))
            .collect();
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        found.sort_unstable();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (start, end) in found {
            match spans.last_mut() {
                Some((_, last)) if start <= *last => *last = (*last).max(end),
                _ => spans.push((start, end)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            out.push_str(&text[at..start]);
            out.push_str(MASK);
            at = end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }
}

/// Whether `needle` is a word, letters only (`health`, `production`): it is masked where it stands
/// as a word, not inside another (`healthy`), where masking would garble the text for nothing.
fn is_word(needle: &str) -> bool {
    needle.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Whether `text[start..end]` has no letter, digit or `_` right before or after it.
fn stands_alone(text: &str, start: usize, end: usize) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let bytes = text.as_bytes();
    !bytes[..start].last().is_some_and(word) && !bytes.get(end).is_some_and(word)
}

/// The forms of `value` that text may hold: itself, each of its lines (and trimmed), and each of
/// those as JSON and `{:?}` escape them; only those of at least [`MIN_LEN`] bytes.
fn forms(value: &str) -> Vec<String> {
    let mut plain = vec![value];
    for line in value.lines() {
        plain.push(line);
        plain.push(line.trim());
    }
    let mut out = Vec::new();
    for text in plain.into_iter().filter(|t| t.len() >= MIN_LEN) {
        let json = serde_json::to_string(text).unwrap_or_default();
        let debug = format!("{text:?}");
        out.push(text.to_string());
        for quoted in [json, debug] {
            let inner = &quoted[1..quoted.len() - 1];
            if inner != text {
                out.push(inner.to_string());
            }
        }
    }
    out
}

/// What the agent fetched, process-wide: learned as it arrives, from any task.
static KNOWN: RwLock<Redactor> = RwLock::new(Redactor::new());

/// Learns `value`: from now on it is masked wherever text leaves the process.
pub fn learn(value: &str) {
    learn_all([value]);
}

/// Learns every value at once.
pub fn learn_all<'a>(values: impl IntoIterator<Item = &'a str>) {
    KNOWN
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .learn(values);
}

/// `text` with every value the agent fetched masked.
pub fn text(text: &str) -> Cow<'_, str> {
    {
        let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
        if known.built {
            return known.masked(text);
        }
    }
    KNOWN
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .redact(text)
}

/// Makes a panic's message pass through the redactor too: a panic can carry a value (an
/// `expect` on a parse, an index into a fetched string). Where the redactor itself cannot be
/// read (the panic came while it was being written), the message is left out.
pub fn redact_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = panic_message(&info.to_string());
        let _ = writeln!(std::io::stderr().lock(), "kicky-agent {message}");
    }));
}

fn panic_message(text: &str) -> String {
    if let Ok(known) = KNOWN.try_read() {
        if known.built {
            return known.masked(text).into_owned();
        }
    }
    match KNOWN.try_write() {
        Ok(mut known) => known.redact(text).into_owned(),
        Err(_) => "panicked while learning a value (the message is not shown)".into(),
    }
}

/// Writes `text` to stdout, redacted: what [`out!`](crate::out!) and [`outln!`](crate::outln!)
/// do. A closed pipe (`status | head`) is not an error worth a panic.
pub fn to_stdout(text: &str) {
    let _ = std::io::stdout()
        .lock()
        .write_all(self::text(text).as_bytes());
}

/// Writes `text` to stdout as it is, for the two outputs that hold no fetched value by
/// construction and that a masked name would make wrong: `render` (masked where values came from
/// variables, exactly, short ones too) and `iam-policy` (names from the config). A value that
/// happens to equal a name (a project named like a parameter's value) would otherwise be masked
/// in a policy meant to be pasted into a template.
pub fn to_stdout_exact(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Writes `text` to stderr, redacted: what [`eout!`](crate::eout!) and
/// [`eoutln!`](crate::eoutln!) do.
pub fn to_stderr(text: &str) {
    let _ = std::io::stderr()
        .lock()
        .write_all(self::text(text).as_bytes());
}

/// `print!` through the redactor.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::redact::to_stdout(&format!($($arg)*)) };
}

/// `println!` through the redactor: how the agent prints its results.
#[macro_export]
macro_rules! outln {
    () => { $crate::redact::to_stdout("\n") };
    ($($arg:tt)*) => { $crate::redact::to_stdout(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` through the redactor.
#[macro_export]
macro_rules! eout {
    ($($arg:tt)*) => { $crate::redact::to_stderr(&format!($($arg)*)) };
}

/// `eprintln!` through the redactor.
#[macro_export]
macro_rules! eoutln {
    ($($arg:tt)*) => { $crate::redact::to_stderr(&format!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_is_redacted() {
        learn("panicky-value-7q7q");
        let message = panic_message("panicked at src/x.rs:1:1:\nparsing panicky-value-7q7q failed");
        assert!(!message.contains("panicky-value-7q7q"), "{message}");
        assert!(message.contains(MASK), "{message}");
    }

    /// A 64 KiB value among a thousand others (a `path:` source) is learned and masked; the
    /// automaton is built once, when text is next masked, not once per value.
    #[test]
    fn a_large_value_among_many_is_masked() {
        let large = format!("big-{}", "x7".repeat(32 * 1024));
        let many: Vec<String> = (0..1000).map(|i| format!("value-{i:04}-q")).collect();
        let mut r = Redactor::new();
        r.learn([large.as_str()]);
        for value in &many {
            r.learn([value.as_str()]);
        }
        let text = format!("a {large} b {} c", many[999]);
        assert_eq!(r.redact(&text), "a <redacted> b <redacted> c");
    }

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:#?}", vec![s.clone()]).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    fn redactor(values: &[&str]) -> Redactor {
        let mut r = Redactor::new();
        r.learn(values.iter().copied());
        r
    }

    #[test]
    fn values_are_masked_wherever_they_appear() {
        let mut r = redactor(&["pw-4f1e9c"]);
        let cases = [
            (
                "connecting to postgres://app:pw-4f1e9c@db",
                "connecting to postgres://app:<redacted>@db",
            ),
            ("pw-4f1e9c", "<redacted>"),
            ("pw-4f1e9cpw-4f1e9c twice", "<redacted> twice"),
            ("nothing here", "nothing here"),
            ("", ""),
            ("pw-4f1e9", "pw-4f1e9"),
        ];
        for (text, want) in cases {
            assert_eq!(r.redact(text), want, "{text:?}");
        }
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert_eq!(Redactor::new().redact("pw-4f1e9c"), "pw-4f1e9c");
    }

    /// The rule: at least MIN_LEN bytes. What it leaves is what is everywhere in text.
    #[test]
    fn values_too_short_to_be_credentials_are_left() {
        assert_eq!(MIN_LEN, 6);
        let short = ["1", "true", "false", "8080", "debug", "1.2.3", "prod", ""];
        let mut r = redactor(&short);
        let line = "debug: listening on 8080 with prod 1.2.3 true false 1";
        assert_eq!(r.redact(line), line);
        let mut r = redactor(&["abc123", "hunter2", "yes-no"]);
        assert_eq!(
            r.redact("abc123 hunter2 yes-no"),
            "<redacted> <redacted> <redacted>"
        );
    }

    /// A value of letters only is masked as a word, not inside another; any other value is
    /// masked wherever it appears.
    #[test]
    fn words_are_masked_as_words() {
        let mut r = redactor(&["health", "pw4f1e9c"]);
        let cases = [
            ("GET /health failed", "GET /<redacted> failed"),
            ("health", "<redacted>"),
            (
                "web is healthy, db unhealthy",
                "web is healthy, db unhealthy",
            ),
            (
                "health_check health2 healthcheck",
                "health_check health2 healthcheck",
            ),
            ("(health)", "(<redacted>)"),
            ("xpw4f1e9cx", "x<redacted>x"),
        ];
        for (text, want) in cases {
            assert_eq!(r.redact(text), want, "{text:?}");
        }
    }

    #[test]
    fn overlapping_values_are_masked_as_their_union() {
        let mut r = redactor(&["ab1def", "def2hi", "secret-long-1", "long-1"]);
        let cases = [
            // The second value starts inside the first: nothing of either is left.
            ("xx ab1def2hi yy", "xx <redacted> yy"),
            // One value inside another.
            ("a secret-long-1 b", "a <redacted> b"),
            ("a long-1 b secret-long-12", "a <redacted> b <redacted>2"),
            // Side by side: one mask.
            ("def2hiab1def", "<redacted>"),
        ];
        for (text, want) in cases {
            assert_eq!(r.redact(text), want, "{text:?}");
        }
    }

    #[test]
    fn escaped_forms_and_lines_are_masked_too() {
        let value = "tok-\"q\"-8d3a\\x\nsecond-line-77\n  indented-88  \nab";
        let mut r = redactor(&[value]);
        let json = serde_json::to_string(&serde_json::json!({ "error": format!("said {value}") }))
            .unwrap();
        assert_eq!(r.redact(&json), r#"{"error":"said <redacted>"}"#);
        let debug = format!("{:?}", format!("said {value}"));
        assert_eq!(r.redact(&debug), "\"said <redacted>\"");
        // Shown a line at a time, or with its newlines made spaces: each line is masked (a
        // line shorter than MIN_LEN is not).
        let flat = value.replace('\n', " ");
        assert_eq!(r.redact(&flat), "<redacted> <redacted> <redacted> ab");
        assert_eq!(r.redact("only second-line-77 here"), "only <redacted> here");
        assert_eq!(r.redact("[indented-88]"), "[<redacted>]");
    }

    #[test]
    fn non_ascii_values_are_cut_on_their_boundaries() {
        let mut r = redactor(&["pässwörd", "密码密码"]);
        assert_eq!(
            r.redact("é pässwörd é 密码密码!"),
            "é <redacted> é <redacted>!"
        );
    }

    /// JSON output is masked as text: the escaped form of a value is one of its forms, and the
    /// mask holds nothing JSON escapes, so the document still parses.
    #[test]
    fn json_documents_stay_json() {
        let value = "pw \"quoted\"\nline-two";
        let mut r = redactor(&[value]);
        let doc = serde_json::to_string_pretty(&serde_json::json!({
            "error": format!("the health check said: {value}"),
            "lines": value.lines().collect::<Vec<_>>(),
        }))
        .unwrap();
        let masked: serde_json::Value = serde_json::from_str(&r.redact(&doc)).unwrap();
        assert_eq!(
            masked,
            serde_json::json!({
                "error": "the health check said: <redacted>",
                "lines": ["<redacted>", "<redacted>"],
            })
        );
    }

    /// The process-wide redactor: what one task learns, every output masks.
    #[test]
    fn what_is_fetched_anywhere_is_masked_everywhere() {
        let value = format!("fetched-{}", std::process::id());
        let secret = Secret::fetched(value.clone());
        assert_eq!(secret.expose(), value);
        let line = format!("said {value}");
        std::thread::spawn(move || assert_eq!(text(&line), "said <redacted>"))
            .join()
            .unwrap();
    }
}
