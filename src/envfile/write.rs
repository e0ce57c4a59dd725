//! Writing the env file: each value spelled so that compose v2 and [`super::parse`] read it back
//! exactly.

use std::fmt;

use crate::redact::Secret;

const HEADER: &str =
    "# Written by kicky-agent from SSM Parameter Store. Edits here are replaced on the next sync.\n";

#[derive(Debug, PartialEq, Eq)]
pub enum RenderError {
    InvalidKey(String),
    /// No dotenv spelling carries this value (it holds a NUL byte).
    Unrepresentable(String),
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::InvalidKey(key) => {
                write!(
                    f,
                    "{key:?} is not a valid variable name ({})",
                    super::KEY_RULE
                )
            }
            RenderError::Unrepresentable(key) => write!(
                f,
                "the value of {key} contains a NUL character, which no env file can carry"
            ),
        }
    }
}

impl std::error::Error for RenderError {}

/// Renders the variables, in order, as an env file.
pub fn render(vars: &[(String, Secret)]) -> Result<String, RenderError> {
    let mut out = String::from(HEADER);
    for (key, value) in vars {
        if !super::is_valid_key(key) {
            return Err(RenderError::InvalidKey(key.clone()));
        }
        let spelled =
            spell(value.expose()).ok_or_else(|| RenderError::Unrepresentable(key.clone()))?;
        out.push_str(key);
        out.push('=');
        out.push_str(&spelled);
        out.push('\n');
    }
    Ok(out)
}

/// The spelling of one value, or `None` when no spelling can carry it.
///
/// In order of preference:
/// - bare, when every character is one no reader treats specially;
/// - single quotes, which compose-go reads literally, when the value has no `'`, no `\r` (which
///   the reader folds with a following `\n`) and no backslash that the reader (or python-dotenv,
///   which decodes `\\` and `\'` there) would take as an escape;
/// - double quotes with `\\ \" \$ \n \r` escaped: carries everything but NUL.
pub fn spell(value: &str) -> Option<String> {
    if value.contains('\0') {
        return None;
    }
    if value.chars().all(is_bare) {
        return Some(value.to_string());
    }
    if single_quotes_carry(value) {
        return Some(format!("'{value}'"));
    }
    let mut out = String::with_capacity(value.len() + 8);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    Some(out)
}

fn is_bare(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-./:,@+%=~^".contains(c)
}

fn single_quotes_carry(value: &str) -> bool {
    if value.contains(['\'', '\r']) || value.ends_with('\\') {
        return false;
    }
    !value
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'\\' && w[1] == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(spell("").unwrap(), "");
        assert_eq!(
            spell("jdbc:mysql://db:3306/x").unwrap(),
            "jdbc:mysql://db:3306/x"
        );
        assert_eq!(spell("a b").unwrap(), "'a b'");
        assert_eq!(spell("$HOME").unwrap(), "'$HOME'");
        assert_eq!(spell("한국어").unwrap(), "'한국어'");
        assert_eq!(spell("two\nlines").unwrap(), "'two\nlines'");
        assert_eq!(spell("a\\b").unwrap(), "'a\\b'");
        assert_eq!(spell("it's $5").unwrap(), "\"it's \\$5\"");
        assert_eq!(spell("a\\\\b").unwrap(), "\"a\\\\\\\\b\"");
        assert_eq!(spell("end\\").unwrap(), "\"end\\\\\"");
        assert_eq!(spell("cr\r\n").unwrap(), "\"cr\\r\\n\"");
        assert_eq!(spell("nul\0"), None);
    }

    #[test]
    fn render_refuses_what_it_cannot_write_naming_the_key() {
        let err = render(&[("DB_PASSWORD".into(), Secret::new("x\0y-secret"))]).unwrap_err();
        assert_eq!(err, RenderError::Unrepresentable("DB_PASSWORD".into()));
        assert!(!err.to_string().contains("secret"));
        let err = render(&[("db/URL".into(), Secret::new("v"))]).unwrap_err();
        assert!(err
            .to_string()
            .contains("\"db/URL\" is not a valid variable name"));
    }

    #[test]
    fn render_keeps_order_and_header() {
        let text = render(&[
            ("B".into(), Secret::new("2")),
            ("A".into(), Secret::new("x y")),
        ])
        .unwrap();
        assert_eq!(text, format!("{HEADER}B=2\nA='x y'\n"));
    }
}
