//! A user-data script read as the shell reads it, as far as `import` needs: logical lines
//! (backslash continuations and quotes that span lines joined, here-documents set aside), their
//! words (by `shell-words`, POSIX quoting rules), and each line's commands with their pipes and
//! the file their output goes to.
//!
//! Words lose their quotes as the shell removes them, so a quoted `">"` reads as a redirection
//! and a single-quoted `$X` as a variable: scripts of the seed's shape never rely on either.

use std::collections::HashMap;

/// One logical line of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The number (from 1) of its first physical line.
    pub number: usize,
    /// Its text as written, continuations joined by a space, on one line.
    pub text: String,
    /// Its words; `None` when it is not shell words (a quote that never closes).
    pub words: Option<Vec<String>>,
    /// Lines of here-document that follow it (set aside, never shown: they may hold secrets).
    pub here_document: usize,
}

/// Commands joined by pipes: `a | b | c`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipeline {
    pub commands: Vec<Command>,
}

/// One simple command: its words (redirections taken out) and where its output goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub words: Vec<String>,
    pub stdout: Option<Redirect>,
}

/// `> path` or `>> path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub path: String,
    pub append: bool,
}

/// The logical lines of `script`.
pub fn logical_lines(script: &str) -> Vec<Line> {
    let script = script.replace("\r\n", "\n");
    let physical: Vec<&str> = script.lines().collect();
    let mut lines = Vec::new();
    let mut i = 0;
    while i < physical.len() {
        let (text, words, used) = join_continued(&physical[i..]);
        let here_document = words
            .as_deref()
            .and_then(here_document_end)
            .map_or(0, |end| count_here_document(&physical[i + used..], &end));
        lines.push(Line {
            number: i + 1,
            text: one_line(&text),
            words,
            here_document,
        });
        i += used + here_document;
    }
    lines
}

/// The first logical line of `physical`, its words and how many physical lines it took: lines
/// are joined while one ends with a backslash or a quote is still open. A quote that never
/// closes makes the first physical line alone a line of no words.
fn join_continued(physical: &[&str]) -> (String, Option<Vec<String>>, usize) {
    let mut text = physical[0].to_string();
    let mut used = 1;
    loop {
        let words = shell_words::split(&text).ok();
        let continued = ends_with_escape(&text) || words.is_none();
        if !continued || used == physical.len() {
            if words.is_none() {
                return (physical[0].to_string(), None, 1);
            }
            return (text, words, used);
        }
        text.push('\n');
        text.push_str(physical[used]);
        used += 1;
    }
}

/// Whether `text` ends with a backslash that escapes the newline after it.
fn ends_with_escape(text: &str) -> bool {
    text.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// A logical line's text on one line: continuations and the newlines of quotes as spaces,
/// control characters dropped (it ends up in a YAML comment).
pub fn one_line(text: &str) -> String {
    let parts: Vec<&str> = text
        .split('\n')
        .map(|part| part.trim().trim_end_matches('\\').trim_end())
        .collect();
    parts
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

/// The delimiter of the here-document a line starts (`<<EOF`, `<<-'EOF'`, `<< EOF`), if any.
fn here_document_end(words: &[String]) -> Option<String> {
    let at = words
        .iter()
        .position(|w| w.starts_with("<<") && !w.starts_with("<<<"))?;
    let rest = words[at][2..].trim_start_matches('-');
    match rest {
        "" => words.get(at + 1).cloned(),
        _ => Some(rest.to_string()),
    }
}

/// How many lines the here-document takes, its delimiter line included.
fn count_here_document(rest: &[&str], end: &str) -> usize {
    match rest.iter().position(|line| line.trim() == end) {
        Some(at) => at + 1,
        None => rest.len(),
    }
}

/// A line's words split into pipelines (at `&&`, `||`, `;`, `&`) of commands (at `|`), with
/// output redirections taken out of the words.
pub fn pipelines(words: &[String]) -> Vec<Pipeline> {
    let tokens = operators_apart(merge_substitutions(words));
    let mut pipelines = Vec::new();
    let mut pipeline = Pipeline::default();
    let mut command = Command::default();
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token.as_str() {
            "&&" | "||" | ";" | "&" => {
                end_command(&mut pipeline, &mut command);
                if !pipeline.commands.is_empty() {
                    pipelines.push(std::mem::take(&mut pipeline));
                }
            }
            "|" | "|&" => end_command(&mut pipeline, &mut command),
            _ => match redirection(&token) {
                Some((kind, attached)) => {
                    let target = match attached.is_empty() && kind.takes_target() {
                        true => tokens.next().unwrap_or_default(),
                        false => attached,
                    };
                    if let Kind::Stdout { append } = kind {
                        command.stdout = Some(Redirect {
                            path: target,
                            append,
                        });
                    }
                }
                None => command.words.push(token),
            },
        }
    }
    end_command(&mut pipeline, &mut command);
    if !pipeline.commands.is_empty() {
        pipelines.push(pipeline);
    }
    pipelines
}

fn end_command(pipeline: &mut Pipeline, command: &mut Command) {
    if !command.words.is_empty() || command.stdout.is_some() {
        pipeline.commands.push(std::mem::take(command));
    }
}

/// Words with a trailing `;` (`cd /srv;`) split from it.
///
/// A subshell's parentheses (`(cd /srv && up)`) become separators too: its commands are read
/// as the others (the directory it enters is taken as entered for good).
fn operators_apart(words: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for word in &words {
        let (open, rest) = match word.strip_prefix('(') {
            Some(rest) if !rest.starts_with('(') => (true, rest),
            _ => (false, word.as_str()),
        };
        let unbalanced = rest.matches(')').count() > rest.matches('(').count();
        let (body, close) = match rest.strip_suffix(')') {
            Some(body) if unbalanced => (body, true),
            _ => (rest, false),
        };
        let (body, semicolon) = match body.strip_suffix(';') {
            Some(body) if !body.ends_with('\\') => (body, true),
            _ => (body, false),
        };
        if open {
            out.push(";".to_string());
        }
        if !body.is_empty() {
            out.push(body.to_string());
        }
        if semicolon || close {
            out.push(";".to_string());
        }
    }
    out
}

/// An unquoted command substitution (`$(aws ssm get-parameter --name /x ...)`) is split into
/// words by the tokenizer: its words are joined again into one.
pub fn merge_substitutions(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut open: Option<String> = None;
    for word in words {
        let joined = match open.take() {
            Some(mut acc) => {
                acc.push(' ');
                acc.push_str(word);
                acc
            }
            None => word.clone(),
        };
        if is_open(&joined) {
            open = Some(joined);
        } else {
            out.push(joined);
        }
    }
    out.extend(open);
    out
}

/// Whether a word has a `$(` or a backtick that it does not close.
fn is_open(word: &str) -> bool {
    let depth = word.matches('(').count() as i64 - word.matches(')').count() as i64;
    (word.contains("$(") && depth > 0) || word.matches('`').count() % 2 == 1
}

/// What a redirection does with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Standard output to a file.
    Stdout { append: bool },
    /// Anything else (stderr, input, a here-document, a descriptor copy): set aside.
    Other { target: bool },
}

impl Kind {
    fn takes_target(self) -> bool {
        match self {
            Kind::Stdout { .. } => true,
            Kind::Other { target } => target,
        }
    }
}

/// The redirection `token` is, if any, and the target written with it (`>/x`: `/x`).
fn redirection(token: &str) -> Option<(Kind, String)> {
    let fd_end = token.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
    let (fd, rest) = token.split_at(fd_end);
    let stdout = fd.is_empty() || fd == "1";
    let ops: [(&str, Kind); 9] = [
        ("<<<", Kind::Other { target: true }),
        ("<<", Kind::Other { target: true }),
        ("&>>", Kind::Stdout { append: true }),
        ("&>", Kind::Stdout { append: false }),
        (">>", Kind::Stdout { append: true }),
        (">|", Kind::Stdout { append: false }),
        (">&", Kind::Other { target: false }),
        (">", Kind::Stdout { append: false }),
        ("<", Kind::Other { target: true }),
    ];
    let (op, kind) = ops.into_iter().find(|(op, _)| rest.starts_with(op))?;
    let attached = rest[op.len()..].to_string();
    let kind = match kind {
        Kind::Stdout { .. } if !stdout => Kind::Other { target: true },
        // `>&2`, `2>&1`: a copy of a descriptor, no file.
        Kind::Other { target: false } => return Some((kind, String::new())),
        kind => kind,
    };
    Some((kind, attached))
}

/// The command substitution in `word` (`KEY=$(inner)` or a backquoted one): the text before
/// it, its inner text and the text after it.
pub fn substitution(word: &str) -> Option<(&str, &str, &str)> {
    if let Some(start) = word.find("$(") {
        let inner_start = start + 2;
        let mut depth = 1;
        for (i, c) in word[inner_start..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                let end = inner_start + i;
                return Some((&word[..start], &word[inner_start..end], &word[end + 1..]));
            }
        }
        return None;
    }
    let start = word.find('`')?;
    let end = start + 1 + word[start + 1..].find('`')?;
    Some((&word[..start], &word[start + 1..end], &word[end + 1..]))
}

/// The pipelines of a command substitution's inner text (none when it is not shell words).
pub fn inner_pipelines(inner: &str) -> Vec<Pipeline> {
    shell_words::split(inner)
        .map(|words| pipelines(&words))
        .unwrap_or_default()
}

/// `word` with `$NAME` and `${NAME}` replaced where `known` has NAME; other references are
/// kept, written `${NAME}` so that what is left to fill in is spelled one way.
pub fn expand(word: &str, known: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match reference(after) {
            Some((name, len, braced_extra)) => {
                match (known.get(name), braced_extra) {
                    (Some(value), false) => out.push_str(value),
                    _ if braced_extra => out.push_str(&rest[at..at + 1 + len]),
                    _ => out.push_str(&format!("${{{name}}}")),
                }
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The variable a `$` is followed by: its name, the length of the reference after the `$`, and
/// whether it is a braced reference with an operator (`${NAME:-default}`), kept as written.
fn reference(after: &str) -> Option<(&str, usize, bool)> {
    let is_name_char = |c: char| c == '_' || c.is_ascii_alphanumeric();
    let starts_name = |s: &str| s.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic());
    if let Some(inner) = after.strip_prefix('{') {
        let close = inner.find('}')?;
        let body = &inner[..close];
        let name_len = body.find(|c| !is_name_char(c)).unwrap_or(body.len());
        if name_len == 0 || !starts_name(body) {
            return None;
        }
        return Some((&body[..name_len], close + 2, name_len < body.len()));
    }
    if !starts_name(after) {
        return None;
    }
    let len = after.find(|c| !is_name_char(c)).unwrap_or(after.len());
    Some((&after[..len], len, false))
}

/// The names of the variables `text` still refers to (`${NAME}`, `${NAME:-x}`, `$NAME`).
pub fn references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        match reference(after) {
            Some((name, len, _)) => {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
                rest = &after[len..];
            }
            None => rest = after,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn continuations_and_open_quotes_join_lines() {
        let script = "a \\\n  b\n\"c\nd\" e\nf\n";
        let lines = logical_lines(script);
        let seen: Vec<(usize, &str, Option<Vec<String>>)> = lines
            .iter()
            .map(|l| (l.number, l.text.as_str(), l.words.clone()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, "a b", Some(words(&["a", "b"]))),
                (3, "\"c d\" e", Some(words(&["c\nd", "e"]))),
                (5, "f", Some(words(&["f"]))),
            ]
        );
    }

    #[test]
    fn a_quote_that_never_closes_is_a_line_of_no_words() {
        let lines = logical_lines("echo 'oops\nls\n");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].words, None);
        assert_eq!(lines[1].words, Some(words(&["ls"])));
    }

    #[test]
    fn here_documents_are_set_aside() {
        let script = "cat <<'EOF' > /srv/a/.env\nTOKEN=abc\nEOF\nls\ncat <<-END\n\tx\n\tEND\n";
        let lines = logical_lines(script);
        let summary: Vec<(usize, usize)> =
            lines.iter().map(|l| (l.number, l.here_document)).collect();
        assert_eq!(summary, vec![(1, 2), (4, 0), (5, 2)]);
        assert!(lines.iter().all(|l| !l.text.contains("TOKEN")));
    }

    /// Pipelines written back: `;` between them, `|` between commands, the redirection last.
    fn described(pipelines: &[Pipeline]) -> String {
        let commands = |p: &Pipeline| -> Vec<String> {
            p.commands
                .iter()
                .map(|c| {
                    let redirect = c
                        .stdout
                        .as_ref()
                        .map(|r| format!(" {}{}", if r.append { ">>" } else { ">" }, r.path));
                    format!("{}{}", c.words.join(" "), redirect.unwrap_or_default())
                })
                .collect()
        };
        let shown: Vec<String> = pipelines.iter().map(|p| commands(p).join(" | ")).collect();
        shown.join(" ; ")
    }

    #[test]
    fn pipelines_split_at_operators_and_take_redirections_out() {
        let table = [
            ("cd /srv; ls", "cd /srv ; ls"),
            ("a x > /f 2>/dev/null && b >>g", "a x >/f ; b >>g"),
            ("a | b 2>&1 | c >/out", "a | b | c >/out"),
            ("a <<EOF >/f", "a >/f"),
            ("(cd /x && up -d)", "cd /x ; up -d"),
            ("( cd /x; up )", "cd /x ; up"),
            (
                "echo K=$(aws ssm get-parameter --name /x) >> .env",
                "echo K=$(aws ssm get-parameter --name /x) >>.env",
            ),
        ];
        for (line, want) in table {
            let words = shell_words::split(line).unwrap();
            assert_eq!(described(&pipelines(&words)), want, "{line}");
        }
    }

    #[test]
    fn substitutions_are_found_nested_and_backquoted() {
        assert_eq!(
            substitution("K=$(a $(b) c)!"),
            Some(("K=", "a $(b) c", "!"))
        );
        assert_eq!(substitution("`a b`"), Some(("", "a b", "")));
        assert_eq!(substitution("plain"), None);
    }

    #[test]
    fn known_variables_expand_and_the_rest_are_spelled_braced() {
        let known: HashMap<String, String> = [("DIR".to_string(), "/srv/a".to_string())].into();
        let table = [
            ("$DIR/x", "/srv/a/x"),
            ("${DIR}", "/srv/a"),
            ("$OTHER/x", "${OTHER}/x"),
            ("${OTHER:-d}", "${OTHER:-d}"),
            ("$1 $$ $(x)", "$1 $$ $(x)"),
        ];
        for (word, want) in table {
            assert_eq!(expand(word, &known), want, "{word}");
        }
        assert_eq!(references("s3://${A}/${B:-x}/$A"), vec!["A", "B"]);
    }
}
