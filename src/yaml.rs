//! YAML read into typed structs, with errors that name the file, the line and the key.
//!
//! serde_norway (the maintained successor of the archived serde_yaml) does the reading.
//! serde_path_to_error records the exact key that failed, and the line is then looked up in a
//! span-keeping parse of the same text (saphyr), because serde_norway points some errors (a
//! top-level value refused by its type) at the start of the document.

use std::fmt;
use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde::de::DeserializeOwned;

/// A YAML document that could not be read, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    /// The key path, such as `env.parameters[0].key`; empty for the document itself.
    pub key: String,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for YamlError {}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// How deep a document may nest, and how far it may grow once its aliases are followed: in
/// nodes, and in bytes of scalars beyond the document's own size. Far beyond any config or
/// compose file (the largest in tests/compose expands by a few kilobytes), far below what hurts:
/// an alias bomb of half a kilobyte expands to a billion nodes, and one 64 KiB scalar referenced
/// 20,000 times (126 KB of text) to 1.3 GB of strings; a deep nesting overflows the stack of a
/// recursive reader.
///
/// go-yaml v3 bounds aliases by their share of the decoded nodes; absolute budgets are simpler
/// here, where every document is small, and make the worst case a number: what a document that
/// passes can cost is its own size plus `MAX_ALIAS_BYTES`.
const MAX_DEPTH: usize = 100;
const MAX_NODES: u64 = 1_000_000;
const MAX_ALIAS_BYTES: u64 = 4 << 20;

/// The expanded size of a node: how many nodes, and how many bytes of scalars.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: u64,
    bytes: u64,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// Refuses a document that nests too deep or whose aliases expand too far, in one pass over its
/// events with bounded memory, before anything reads it into a tree (serde_norway and saphyr
/// both copy an anchored node at each of its aliases).
fn bounded(text: &str, file: &Path) -> Result<(), YamlError> {
    use saphyr_parser::{Event, Parser};
    let refuse = |marker: saphyr_parser::Marker, message: String| YamlError {
        file: file.display().to_string(),
        line: marker.line(),
        column: marker.col() + 1,
        key: String::new(),
        message,
    };
    let max_bytes = (text.len() as u64).saturating_add(MAX_ALIAS_BYTES);
    // The expanded size of each anchored node, and of the collections open now.
    let mut anchored: std::collections::HashMap<usize, Size> = Default::default();
    let mut open: Vec<(usize, Size)> = Vec::new();
    let mut total = Size::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(event) => event,
            // Nesting so deep the event parser itself gives up.
            Err(err) if err.info().contains("recursion limit") => {
                return Err(refuse(
                    *err.marker(),
                    format!("nested deeper than {MAX_DEPTH} levels: refused"),
                ));
            }
            // A syntax error is the reader's to report, with its own words.
            Err(_) => return Ok(()),
        };
        let one = |bytes: usize| Size {
            nodes: 1,
            bytes: bytes as u64,
        };
        let (anchor, size) = match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, one(0)));
                if open.len() > MAX_DEPTH {
                    return Err(refuse(
                        span.start,
                        format!("nested deeper than {MAX_DEPTH} levels: refused"),
                    ));
                }
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some(done) => done,
                None => continue,
            },
            Event::Scalar(value, _, anchor, _) => (anchor, one(value.len())),
            Event::Alias(anchor) => (0, anchored.get(&anchor).copied().unwrap_or(one(0))),
            _ => continue,
        };
        if anchor > 0 {
            anchored.insert(anchor, size);
        }
        match open.last_mut() {
            Some((_, parent)) => parent.add(size),
            None => total.add(size),
        }
        let mut now = total;
        open.iter().for_each(|(_, s)| now.add(*s));
        if now.nodes > MAX_NODES {
            return Err(refuse(
                span.start,
                format!("expands to more than {MAX_NODES} nodes once its aliases (*name) are followed: refused"),
            ));
        }
        if now.bytes > max_bytes {
            let mib = MAX_ALIAS_BYTES >> 20;
            return Err(refuse(
                span.start,
                format!("expands to more than {mib} MiB beyond its own size once its aliases (*name) are followed: refused"),
            ));
        }
    }
    Ok(())
}

/// Deserializes `text`, read from `file`, into `T`.
pub fn from_str<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, YamlError> {
    bounded(text, file)?;
    let err = match serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text)) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    let mut steps: Vec<Step> = steps_of(err.path());
    let inner = err.into_inner();
    let message = bare_message(&inner);
    // Point an unknown key's error at the key itself, not at its map.
    if let Some(field) = unknown_field(&message) {
        if steps.last() != Some(&Step::Key(field.to_string())) {
            steps.push(Step::Key(field.to_string()));
        }
    }
    if message.contains("more than one document") {
        return Err(several_documents(text, file));
    }
    let located = locate(text, &steps).map(|(at, _)| at);
    let (line, column) = match (located, inner.location()) {
        (Some(at), _) => at,
        (None, Some(loc)) => (loc.line(), loc.column()),
        (None, None) => (0, 0),
    };
    Err(YamlError {
        file: file.display().to_string(),
        line,
        column,
        key: key_path(&steps),
        message,
    })
}

/// Every problem of `text` against `T`, not only the first: each offending node (an unknown key,
/// a value of the wrong type, an item that cannot be read) is reported and taken out, and the
/// rest read again, until what is left reads. Returns what is left (`None` when the text is not
/// even YAML) and the problems, each with its line in `text` and its key path as written there.
pub fn check_all<T: DeserializeOwned>(
    text: &str,
    file: &Path,
) -> (Option<serde_norway::Value>, Vec<YamlError>) {
    if let Err(err) = bounded(text, file) {
        return (None, vec![err]);
    }
    let mut value: serde_norway::Value = match serde_norway::from_str(text) {
        Ok(value) => value,
        Err(_) => return (None, from_str::<T>(text, file).err().into_iter().collect()),
    };
    let mut errors: Vec<YamlError> = Vec::new();
    // Items taken out of sequences, by the sequence's key path as written in `text`, so later
    // paths (into the shortened sequence) are reported as written.
    let mut removed: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    // Keys taken out, as written: a "missing field" they leave behind is no new problem.
    let mut taken: Vec<String> = Vec::new();
    // Each round takes one node out: bounded by the size of the document.
    for _ in 0..1000 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(_) => break,
            Err(err) => err,
        };
        let mut steps = steps_of(err.path());
        let inner = err.into_inner();
        let message = bare_message(&inner);
        if let Some(field) = unknown_field(&message) {
            if steps.last() != Some(&Step::Key(field.to_string())) {
                steps.push(Step::Key(field.to_string()));
            }
        }
        let written = as_written(&steps, &removed);
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            .map(|field| join_key(&key_path(&written), field));
        let echo = missing.as_ref().is_some_and(|k| taken.contains(k));
        if !echo {
            let (line, column) = locate(text, &written).map(|(at, _)| at).unwrap_or((0, 0));
            errors.push(YamlError {
                file: file.display().to_string(),
                line,
                column,
                key: key_path(&written),
                message,
            });
        }
        if steps.is_empty() || !take_out(&mut value, &steps) {
            break;
        }
        taken.push(key_path(&written));
        if let Some(Step::Index(i)) = written.last() {
            let seq = key_path(&written[..written.len() - 1]);
            removed.entry(seq).or_default().push(*i);
        }
    }
    errors.sort_by_key(|e| (e.line, e.column));
    (Some(value), errors)
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
}

fn steps_of(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
            _ => None,
        })
        .collect()
}

/// `steps` into a document some sequence items were taken out of, as the original spells them.
fn as_written(
    steps: &[Step],
    removed: &std::collections::BTreeMap<String, Vec<usize>>,
) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for step in steps {
        let next = match step {
            Step::Key(k) => Step::Key(k.clone()),
            Step::Index(i) => {
                let gone = removed
                    .get(&key_path(&out))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                // The i-th item of those still there.
                let original = (0..).filter(|j| !gone.contains(j)).nth(*i).unwrap_or(*i);
                Step::Index(original)
            }
        };
        out.push(next);
    }
    out
}

/// Takes the node at `steps` out of `value`; false when it is not there.
fn take_out(value: &mut serde_norway::Value, steps: &[Step]) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut node = value;
    for step in parents {
        let next = match (step, node) {
            (Step::Key(k), serde_norway::Value::Mapping(map)) => map.get_mut(k.as_str()),
            (Step::Index(i), serde_norway::Value::Sequence(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(child) => node = child,
            None => return false,
        }
    }
    match (last, node) {
        (Step::Key(k), serde_norway::Value::Mapping(map)) => map.remove(k.as_str()).is_some(),
        (Step::Index(i), serde_norway::Value::Sequence(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// A file of several YAML documents, located at the start of the second.
fn several_documents(text: &str, file: &Path) -> YamlError {
    let (line, column) = MarkedYaml::load_from_str(text)
        .ok()
        .and_then(|docs| {
            docs.get(1)
                .map(|d| (d.span.start.line(), d.span.start.col() + 1))
        })
        .unwrap_or((0, 0));
    YamlError {
        file: file.display().to_string(),
        line,
        column,
        key: String::new(),
        message: "a second YAML document (after `---`): kicky-agent reads one document per file;                   docker compose would merge them like several files, so merge them into one"
            .to_string(),
    }
}

/// serde_norway's message without the path prefix and the location suffix it adds itself.
fn bare_message(err: &serde_norway::Error) -> String {
    let mut message = err.to_string();
    if let Some(loc) = err.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    if let Some((prefix, rest)) = message.split_once(": ") {
        let is_path = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c));
        if is_path {
            return rest.to_string();
        }
    }
    message
}

fn key_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) if out.is_empty() => out.push_str(key),
            Step::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Where `key`, a path such as `files[1].path`, is written in `text`: 1-based line and column.
/// `None` when the document does not spell that key (it came from another file, or a default).
pub fn position_of(text: &str, key: &str) -> Option<(usize, usize)> {
    // The spans come from a tree, which copies every alias's node: a text that did not pass
    // [`bounded`] (such as a config file refused for it, kept to locate other keys) is not read.
    // (The readers above locate only in texts that passed it.)
    bounded(text, Path::new("")).ok()?;
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            steps.push(Step::Key(name.to_string()));
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            steps.push(Step::Index(index.trim_end_matches(']').parse().ok()?));
        }
    }
    match locate(text, &steps)? {
        (at, true) => Some(at),
        (_, false) => None,
    }
}

/// The 1-based line and column of the deepest node of `steps` found in `text` (a key's own
/// position for a mapping step, the item's for a sequence step), and whether all steps were found.
fn locate(text: &str, steps: &[Step]) -> Option<((usize, usize), bool)> {
    let docs = MarkedYaml::load_from_str(text).ok()?;
    let mut node = docs.first()?;
    let mut at = node.span.start;
    let mut found = 0;
    for step in steps {
        let next = match (step, &node.data) {
            (Step::Key(key), YamlData::Mapping(map)) => map
                .iter()
                .find(|(k, _)| scalar_text(k).as_deref() == Some(key.as_str()))
                .map(|(k, v)| (k.span.start, v)),
            (Step::Index(i), YamlData::Sequence(items)) => {
                items.get(*i).map(|item| (item.span.start, item))
            }
            _ => None,
        };
        match next {
            Some((marker, child)) => {
                at = marker;
                node = child;
                found += 1;
            }
            None => break,
        }
    }
    Some(((at.line(), at.col() + 1), found == steps.len()))
}

fn scalar_text(node: &MarkedYaml) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Representation(s, _, _) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: Option<String>,
        count: Option<u32>,
        items: Option<Vec<Item>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        port: u16,
    }

    fn err(text: &str) -> YamlError {
        from_str::<Doc>(text, Path::new("f.yaml")).unwrap_err()
    }

    #[test]
    fn errors_point_at_the_key() {
        let e = err("name: x\ncount: lots\n");
        assert_eq!((e.line, e.key.as_str()), (2, "count"));
        assert!(
            e.message.starts_with("invalid type: string \"lots\""),
            "{}",
            e.message
        );

        let e = err("name: x\nitems:\n  - port: 80\n  - port: 99999\n");
        assert_eq!((e.line, e.column, e.key.as_str()), (4, 5, "items[1].port"));

        let e = err("name: x\nitems:\n  - port: 80\n    prot: 1\n");
        assert_eq!((e.line, e.column, e.key.as_str()), (4, 5, "items[0].prot"));
        assert!(
            e.message.starts_with("unknown field `prot`"),
            "{}",
            e.message
        );
        assert_eq!(e.to_string().split(": ").next(), Some("f.yaml:4:5"));
    }

    #[test]
    fn positions_of_dotted_keys() {
        let text = "a: 1\nfiles:\n  - source: x\n  - source: y\n    path: p\n";
        assert_eq!(position_of(text, "files[1].path"), Some((5, 5)));
        assert_eq!(position_of(text, "files[0]"), Some((3, 5)));
        assert_eq!(position_of(text, "files[0].path"), None);
        assert_eq!(position_of(text, "a"), Some((1, 1)));
    }

    #[test]
    fn every_problem_is_found_in_one_pass() {
        let text = "name: [x]\ncount: lots\nitems:\n  - port: 99999\n  - port: 80\n    prot: 1\n  - port: nope\nother: 1\n";
        let (left, errors) = check_all::<Doc>(text, Path::new("f.yaml"));
        let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (1, "name"),
                (2, "count"),
                (4, "items[0].port"),
                (6, "items[1].prot"),
                (7, "items[2].port"),
                (8, "other"),
            ],
            "{errors:?}"
        );
        // What is left reads.
        let left: Doc = serde_norway::from_value(left.unwrap()).unwrap();
        assert!(left.name.is_none() && left.count.is_none());
        assert!(check_all::<Doc>("name: x\n", Path::new("f.yaml"))
            .1
            .is_empty());
        let (left, errors) = check_all::<Doc>("name: [\n", Path::new("f.yaml"));
        assert!(left.is_none() && errors.len() == 1);
    }

    /// A billion laughs: ten aliases of ten aliases of ..., half a kilobyte of text.
    fn alias_bomb() -> String {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn hostile_documents_are_refused_before_they_are_read() {
        let e = from_str::<serde_norway::Value>(&alias_bomb(), Path::new("f.yaml")).unwrap_err();
        assert!(
            e.message.contains("once its aliases (*name) are followed"),
            "{e}"
        );
        assert!(e.line > 1, "{e:?}");
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = from_str::<serde_norway::Value>(&deep, Path::new("f.yaml")).unwrap_err();
        assert!(e.message.contains("nested deeper than 100 levels"), "{e}");
        let (_, errors) = check_all::<Doc>(&alias_bomb(), Path::new("f.yaml"));
        assert_eq!(errors.len(), 1);
        // Anchors of ordinary size are fine.
        let fine = "base: &base {a: 1, b: [1, 2]}\none: *base\ntwo: *base\n";
        assert!(from_str::<serde_norway::Value>(fine, Path::new("f.yaml")).is_ok());
    }

    /// One large anchored scalar referenced many times: few nodes, many bytes.
    fn byte_bomb(scalar: usize, refs: usize) -> String {
        let refs = vec!["*a"; refs].join(", ");
        format!("big: &a {}\nrefs: [{refs}]\n", "x".repeat(scalar))
    }

    #[test]
    fn aliases_are_bounded_by_the_bytes_they_expand_to() {
        // 126 KB of text, 1.3 GB once expanded: refused at the alias that crosses the budget.
        let bomb = byte_bomb(64 << 10, 20_000);
        let started = std::time::Instant::now();
        let e = from_str::<serde_norway::Value>(&bomb, Path::new("f.yaml")).unwrap_err();
        assert!(e.message.contains("4 MiB beyond its own size"), "{e}");
        assert_eq!((e.file.as_str(), e.line), ("f.yaml", 2), "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let (left, errors) = check_all::<Doc>(&bomb, Path::new("f.yaml"));
        assert!(left.is_none() && errors.len() == 1, "{errors:?}");
        // Nor is a refused text read into a tree to locate a key in it.
        assert_eq!(position_of(&bomb, "big"), None);
        // Just under the budget reads (the scalar once, then 63 copies of 64 KiB: 4 MiB).
        let edge = byte_bomb(64 << 10, 63);
        assert!(from_str::<serde_norway::Value>(&edge, Path::new("f.yaml")).is_ok());
        assert_eq!(position_of(&edge, "big"), Some((1, 1)));
        let over = byte_bomb(64 << 10, 66);
        assert!(from_str::<serde_norway::Value>(&over, Path::new("f.yaml")).is_err());
    }

    #[test]
    fn a_second_document_is_located() {
        let e = err("name: x\n---\nname: y\ncount: 2\n");
        assert!(e.message.contains("a second YAML document"), "{e}");
        assert!(e.line >= 2 && e.line <= 3, "{e:?}");
    }

    #[test]
    fn syntax_errors_keep_the_parser_location() {
        let e = err("name: x\ncount: [1\n");
        assert!(e.line >= 2, "{e}");
    }
}
