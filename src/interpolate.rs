//! Variable substitution as the Compose Specification (and compose-go, which docker compose v2 runs)
//! defines it: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
//! `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` for a literal `$`, with substitutions
//! nested in defaults. Used by the dotenv reader and the compose model alike.
//!
//! Errors name variables, never the text around them: the text may be a secret (a dotenv document
//! read from a SecureString).

use std::fmt;

/// The result of a substitution, with the variables that were used unset and without a default
/// (compose warns about those and substitutes an empty string).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Substituted {
    pub value: String,
    pub unset: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum InterpolationError {
    /// `${` without its closing `}`.
    Unterminated,
    /// `${...}` whose content is not `NAME` optionally followed by an operator.
    InvalidFormat,
    /// `${NAME:?message}` or `${NAME?message}` with `NAME` unset (or empty, for `:?`).
    Required { name: String, message: String },
}

impl fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpolationError::Unterminated => f.write_str("`${` without a closing `}`"),
            InterpolationError::InvalidFormat => {
                f.write_str("invalid interpolation format (expected ${NAME}, ${NAME:-default}, ...; write $$ for a literal $)")
            }
            InterpolationError::Required { name, message } if message.is_empty() => {
                write!(f, "required variable {name} is missing a value")
            }
            InterpolationError::Required { name, message } => {
                write!(f, "required variable {name} is missing a value: {message}")
            }
        }
    }
}

impl std::error::Error for InterpolationError {}

/// Substitutes every variable reference in `input`, looking names up with `lookup`.
pub fn substitute(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, InterpolationError> {
    let mut out = Substituted::default();
    substitute_into(input, lookup, &mut out)?;
    Ok(out)
}

fn substitute_into(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Substituted,
) -> Result<(), InterpolationError> {
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.value.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.value.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let close = closing_brace(inner).ok_or(InterpolationError::Unterminated)?;
            expand_braced(&inner[..close], lookup, out)?;
            rest = &inner[close + 1..];
        } else {
            let name_len = name_length(after);
            if name_len == 0 {
                // A `$` not followed by a name is kept as it is, as compose does.
                out.value.push('$');
                rest = after;
            } else {
                let name = &after[..name_len];
                match lookup(name) {
                    Some(value) => out.value.push_str(&value),
                    None => out.unset.push(name.to_string()),
                }
                rest = &after[name_len..];
            }
        }
    }
    out.value.push_str(rest);
    Ok(())
}

/// The index of the `}` that closes a `${`. Every `{` inside opens a pair (a nested `${...}`, or
/// a brace in a default such as `${VAR:-{"json":1}}`), as compose-go (v2.13 and later) counts.
fn closing_brace(inner: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, byte) in inner.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Length of the variable name at the start of `s`: `[A-Za-z_][A-Za-z0-9_]*`.
fn name_length(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

fn expand_braced(
    body: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Substituted,
) -> Result<(), InterpolationError> {
    let name_len = name_length(body);
    if name_len == 0 {
        return Err(InterpolationError::InvalidFormat);
    }
    let name = &body[..name_len];
    let op = &body[name_len..];
    let value = lookup(name);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (operator, argument) = split_operator(op).ok_or(InterpolationError::InvalidFormat)?;
    match operator {
        "" => match value {
            Some(v) => out.value.push_str(&v),
            None => out.unset.push(name.to_string()),
        },
        ":-" | "-" => {
            let use_value = if operator == ":-" { non_empty } else { set };
            if use_value {
                out.value.push_str(&value.unwrap_or_default());
            } else {
                substitute_into(argument, lookup, out)?;
            }
        }
        ":?" | "?" => {
            let present = if operator == ":?" { non_empty } else { set };
            if !present {
                let message = substitute(argument, lookup)?.value;
                return Err(InterpolationError::Required {
                    name: name.to_string(),
                    message,
                });
            }
            out.value.push_str(&value.unwrap_or_default());
        }
        ":+" | "+" => {
            let present = if operator == ":+" { non_empty } else { set };
            if present {
                substitute_into(argument, lookup, out)?;
            }
        }
        _ => unreachable!("split_operator returns only known operators"),
    }
    Ok(())
}

fn split_operator(op: &str) -> Option<(&str, &str)> {
    if op.is_empty() {
        return Some(("", ""));
    }
    for operator in [":-", ":?", ":+", "-", "?", "+"] {
        if let Some(argument) = op.strip_prefix(operator) {
            return Some((operator, argument));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "HOST" => Some("db".into()),
            _ => None,
        }
    }

    fn sub(s: &str) -> String {
        substitute(s, &env).unwrap().value
    }

    #[test]
    fn plain_forms() {
        assert_eq!(sub("$SET"), "value");
        assert_eq!(sub("${SET}"), "value");
        assert_eq!(sub("a${SET}b$SET.c"), "avalueb".to_string() + "value.c");
        assert_eq!(sub("$$SET"), "$SET");
        assert_eq!(sub("$${SET}"), "${SET}");
        assert_eq!(sub("cost: 5$"), "cost: 5$");
        assert_eq!(sub("$1 and $ and $-"), "$1 and $ and $-");
        assert_eq!(sub("한국어 $SET"), "한국어 value");
    }

    #[test]
    fn unset_variables_are_empty_and_reported() {
        let r = substitute("x${NOPE}y$ALSO_NOT", &env).unwrap();
        assert_eq!(r.value, "xy");
        assert_eq!(r.unset, vec!["NOPE".to_string(), "ALSO_NOT".to_string()]);
    }

    #[test]
    fn defaults() {
        assert_eq!(sub("${NOPE:-def}"), "def");
        assert_eq!(sub("${EMPTY:-def}"), "def");
        assert_eq!(sub("${SET:-def}"), "value");
        assert_eq!(sub("${NOPE-def}"), "def");
        assert_eq!(sub("${EMPTY-def}"), "");
        assert_eq!(sub("${SET-def}"), "value");
        assert_eq!(sub("${NOPE:-}"), "");
    }

    #[test]
    fn nested_defaults() {
        assert_eq!(sub("${NOPE:-${HOST}:5432}"), "db:5432");
        assert_eq!(sub("${NOPE:-${ALSO:-${HOST}}}"), "db");
        assert_eq!(sub("${NOPE:-$$literal}"), "$literal");
    }

    #[test]
    fn braces_in_defaults_and_alternatives_pair_up() {
        assert_eq!(sub(r#"${NOPE:-{"json":1}}"#), r#"{"json":1}"#);
        assert_eq!(sub(r#"${SET:-{"json":1}}"#), "value");
        assert_eq!(sub(r#"${SET:+{"a":{"b":2}}}x"#), r#"{"a":{"b":2}}x"#);
        assert_eq!(sub("${NOPE:-{}}"), "{}");
    }

    #[test]
    fn alternatives() {
        assert_eq!(sub("${SET:+alt}"), "alt");
        assert_eq!(sub("${EMPTY:+alt}"), "");
        assert_eq!(sub("${NOPE:+alt}"), "");
        assert_eq!(sub("${SET+alt}"), "alt");
        assert_eq!(sub("${EMPTY+alt}"), "alt");
        assert_eq!(sub("${NOPE+alt}"), "");
        assert_eq!(sub("${SET:+${HOST}}"), "db");
    }

    #[test]
    fn required() {
        assert_eq!(sub("${SET:?boom}"), "value");
        assert_eq!(sub("${EMPTY?boom}"), "");
        assert_eq!(
            substitute("${EMPTY:?must be set}", &env),
            Err(InterpolationError::Required {
                name: "EMPTY".into(),
                message: "must be set".into()
            })
        );
        assert_eq!(
            substitute("${NOPE?}", &env),
            Err(InterpolationError::Required {
                name: "NOPE".into(),
                message: String::new()
            })
        );
        let err = substitute("${NOPE:?set it in SSM}", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "required variable NOPE is missing a value: set it in SSM"
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(
            substitute("${SET", &env),
            Err(InterpolationError::Unterminated)
        );
        assert_eq!(
            substitute("${}", &env),
            Err(InterpolationError::InvalidFormat)
        );
        assert_eq!(
            substitute("${1A}", &env),
            Err(InterpolationError::InvalidFormat)
        );
        assert_eq!(
            substitute("${SET!x}", &env),
            Err(InterpolationError::InvalidFormat)
        );
        assert_eq!(
            substitute("${SET:x}", &env),
            Err(InterpolationError::InvalidFormat)
        );
    }
}
