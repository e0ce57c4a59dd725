//! Reading env files with compose-go's dotenv rules (the parser docker compose v2 uses).
//!
//! Errors give the line and what is wrong, never the text of the line: an env file holds secrets.

use std::fmt;

use indexmap::IndexMap;

use crate::interpolate::{self, InterpolationError};

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for ParseError {}

/// Parses a dotenv document into its variables, in order of first appearance (a later line with
/// the same key replaces the value). `lookup` answers variables the document refers to but does
/// not define; a bare `KEY` line takes its value from it, or is left out.
pub fn parse(
    src: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ParseError> {
    // A byte-order mark (files saved by Windows editors) is not part of the first name.
    let src = src
        .strip_prefix('\u{feff}')
        .unwrap_or(src)
        .replace("\r\n", "\n");
    let mut vars: IndexMap<String, String> = IndexMap::new();
    let mut rest: &str = &src;
    let line_of = |rest: &str| src[..src.len() - rest.len()].matches('\n').count() + 1;
    loop {
        rest = statement_start(rest);
        if rest.is_empty() {
            break;
        }
        let line = line_of(rest);
        let err = |problem: String| ParseError { line, problem };
        let (key, after, inherited) = locate_key(rest).map_err(err)?;
        if inherited {
            if let Some(value) = vars.get(key).cloned().or_else(|| lookup(key)) {
                vars.insert(key.to_string(), value);
            }
            rest = after;
            continue;
        }
        let known = |name: &str| vars.get(name).cloned().or_else(|| lookup(name));
        let (value, after) = extract_value(after, &known).map_err(err)?;
        vars.insert(key.to_string(), value);
        rest = after;
    }
    Ok(vars.into_iter().collect())
}

/// Parses an env file in docker's `--env-file` format (compose's `format: raw`): each line
/// `KEY=VALUE` with the value taken as it is (no quotes, no interpolation); a bare `KEY` takes
/// its value from `lookup`, or is left out; blank lines and `#` comments are skipped.
pub fn parse_raw(
    src: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ParseError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut vars: IndexMap<String, String> = IndexMap::new();
    for (i, line) in src.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = match trimmed.split_once('=') {
            Some((key, value)) => (key, Some(value.to_string())),
            None => (trimmed.trim_end(), None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ParseError {
                line: i + 1,
                problem: "a variable name cannot be empty or contain a space".into(),
            });
        }
        if let Some(value) = value.or_else(|| lookup(key)) {
            vars.insert(key.to_string(), value);
        }
    }
    Ok(vars.into_iter().collect())
}

/// compose-go's notion of a blank inside a line (no newline).
fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    )
}

/// Skips blank space and comment lines.
fn statement_start(mut src: &str) -> &str {
    loop {
        src = src.trim_start();
        if !src.starts_with('#') {
            return src;
        }
        match src.find('\n') {
            Some(pos) => src = &src[pos..],
            None => return "",
        }
    }
}

/// Splits `KEY=rest`, `KEY: rest` or a bare `KEY` line (inherited).
fn locate_key(src: &str) -> Result<(&str, &str, bool), String> {
    let mut src = src;
    if let Some(after) = src.strip_prefix("export") {
        if after.starts_with(|c: char| c.is_whitespace()) {
            src = after.trim_start_matches(is_space);
        }
    }
    let mut end = None;
    for (i, c) in src.char_indices() {
        if is_space(c) {
            continue;
        }
        match c {
            '=' | ':' => {
                end = Some((i, i + 1, false));
                break;
            }
            '\n' => {
                end = Some((i, i + 1, true));
                break;
            }
            '_' | '.' | '-' | '[' | ']' => {}
            c if c.is_alphanumeric() => {}
            _ => return Err("unexpected character in a variable name".into()),
        }
    }
    let (key_end, value_start, inherited) = end.unwrap_or((src.len(), src.len(), true));
    let key = src[..key_end].trim_end_matches(is_space);
    if key.is_empty() {
        return Err("a line without a variable name".into());
    }
    if key.contains(is_space) {
        return Err("a variable name cannot contain a space".into());
    }
    Ok((
        key,
        src[value_start..].trim_start_matches(is_space),
        inherited,
    ))
}

fn extract_value<'a>(
    src: &'a str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, &'a str), String> {
    let quote = match src.chars().next() {
        Some(q @ ('\'' | '"')) => q,
        _ => {
            let (line, rest) = src.split_once('\n').unwrap_or((src, ""));
            let line = line.split(" #").next().unwrap_or_default().trim_end();
            return Ok((interpolate(line, lookup)?, rest));
        }
    };
    let mut chars = String::new();
    let mut escaped = false;
    for (i, c) in src.char_indices().skip(1) {
        if c != quote {
            if !escaped && c == '\\' {
                escaped = true;
                continue;
            }
            if escaped {
                escaped = false;
                chars.push('\\');
            }
            chars.push(c);
            continue;
        }
        if escaped {
            escaped = false;
            chars.push(c);
            continue;
        }
        let value = if quote == '"' {
            interpolate(&expand_escapes(&chars), lookup)?
        } else {
            chars
        };
        return Ok((value, &src[i + 1..]));
    }
    Err("a quoted value without its closing quote".into())
}

/// The escapes compose-go expands in double-quoted values. `\$` becomes `$$`, which the
/// interpolation that follows turns into a literal `$`.
fn expand_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let replacement = match chars.peek() {
            Some('a') => "\u{7}",
            Some('b') => "\u{8}",
            Some('f') => "\u{c}",
            Some('n') => "\n",
            Some('r') => "\r",
            Some('t') => "\t",
            Some('v') => "\u{b}",
            Some('$') => "$$",
            Some('"') => "\"",
            Some('\\') => "\\",
            Some('0') => {
                let digits: String = chars.clone().skip(1).take(3).collect();
                match u8::from_str_radix(&digits, 8) {
                    Ok(byte) if digits.len() == 3 && byte.is_ascii() => {
                        out.push(byte as char);
                        for _ in 0..4 {
                            chars.next();
                        }
                        continue;
                    }
                    _ => {
                        out.push('\\');
                        continue;
                    }
                }
            }
            _ => {
                out.push('\\');
                continue;
            }
        };
        out.push_str(replacement);
        chars.next();
    }
    out
}

fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    interpolate::substitute(text, lookup)
        .map(|s| s.value)
        .map_err(|e| match e {
            // The message after `?` is document text: keep it out, name the variable only.
            InterpolationError::Required { name, .. } => {
                format!("required variable {name} is missing a value")
            }
            other => other.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME").then(|| "/root".to_string())
    }

    fn p(src: &str) -> Vec<(String, String)> {
        parse(src, &env).unwrap()
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn compose_go_rules() {
        let doc = "# comment\n\
                   export A=1\n\
                   B = spaced value   \n\
                   C=x #comment\n\
                   D=x#not-comment\n\
                   E='single $HOME \\n'\n\
                   F=\"double $HOME \\n \\$HOME \\\\ \\\"\"\n\
                   G=$HOME/bin\n\
                   H=${A}${B}\n\
                   I: yaml style\n\
                   J=\n\
                   K=''\n\
                   L='multi\nline'\n\
                   A=2\n";
        assert_eq!(
            p(doc),
            kv(&[
                ("A", "2"),
                ("B", "spaced value"),
                ("C", "x"),
                ("D", "x#not-comment"),
                ("E", "single $HOME \\n"),
                ("F", "double /root \n $HOME \\ \""),
                ("G", "/root/bin"),
                ("H", "1spaced value"),
                ("I", "yaml style"),
                ("J", ""),
                ("K", ""),
                ("L", "multi\nline"),
            ])
        );
    }

    #[test]
    fn bare_keys_inherit() {
        assert_eq!(p("HOME\nNOPE\nX=1\n"), kv(&[("HOME", "/root"), ("X", "1")]));
        assert_eq!(p("HOME"), kv(&[("HOME", "/root")]));
    }

    #[test]
    fn crlf_files() {
        assert_eq!(p("A=1\r\nB='x'\r\n"), kv(&[("A", "1"), ("B", "x")]));
    }

    #[test]
    fn the_raw_format_takes_values_as_they_are() {
        let text = "# comment\nA='quoted' $NOT ${X}\n  B=x=y\nHOME\nUNSET\n";
        let vars = parse_raw(text, &env).unwrap();
        assert_eq!(
            vars,
            vec![
                ("A".into(), "'quoted' $NOT ${X}".into()),
                ("B".into(), "x=y".into()),
                ("HOME".into(), "/root".into()),
            ]
        );
        assert_eq!(parse_raw("OK=1\nMY VAR=2\n", &env).unwrap_err().line, 2);
        // docker compose v2.40.3 refuses `DEBUG = true` in a raw file ("variable 'DEBUG ' contains
        // whitespaces") but reads it as `DEBUG` in a dotenv one (`compose_go_rules`, `B = ...`).
        assert_eq!(parse_raw("OK=1\nDEBUG = true\n", &env).unwrap_err().line, 2);
        assert_eq!(p("DEBUG = true\n"), kv(&[("DEBUG", "true")]));
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_spaces_in_names_refused() {
        let vars = parse("\u{feff}FIRST=1\r\nSECOND=2\r\n", &env).unwrap();
        assert_eq!(
            vars,
            vec![("FIRST".into(), "1".into()), ("SECOND".into(), "2".into())]
        );
        let err = parse("OK=1\nMY VAR=2\n", &env).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.problem.contains("cannot contain a space"), "{err}");
    }

    #[test]
    fn errors_name_the_line_not_the_text() {
        let err = parse("A=1\nB='secret-value\n", &env).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = parse("A=1\n\npassword hunter2\n", &env).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = parse("A=1\nhunter2!=x\n", &env).unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse("A=${NOPE:?the-secret-hint}\n", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: required variable NOPE is missing a value"
        );
        let err = parse("A=${oops\n", &env).unwrap_err();
        assert_eq!(err.line, 1);
    }
}
