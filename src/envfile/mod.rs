//! The env file: dotenv as docker compose v2 reads it (compose-go's rules), written by the agent
//! and read back by the agent with the same rules.
//!
//! compose-go's rules, which both halves follow:
//! - unquoted values end at the newline, lose a ` #` comment and trailing blanks, and are
//!   interpolated (`$VAR`, `${VAR:-x}`, `$$` for `$`);
//! - single-quoted values are literal, except that `\'` stands for `'`;
//! - double-quoted values take the escapes `\n \r \t \\ \" \$` (and a few more) and are then
//!   interpolated.
//!
//! The writer picks for each value the simplest spelling that reads back exactly ([`spell`]);
//! the reader is [`parse`].

mod read;
mod write;

pub use read::{parse, parse_raw, ParseError};
pub use write::{render, spell, RenderError};

/// Which keys the env file holds: the rule lives with the config's [`EnvKey`](crate::config::types::EnvKey),
/// which reads keys before any env file is written.
pub use crate::config::types::{is_valid_key, KEY_RULE};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Secret;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn round_trip(value: &str) {
        let vars = vec![("K".to_string(), Secret::new(value))];
        let text = render(&vars).unwrap_or_else(|e| panic!("render failed for {value:?}: {e}"));
        let back = parse(&text, &no_env)
            .unwrap_or_else(|e| panic!("parse failed for {value:?}: {e}\n{text}"));
        assert_eq!(
            back,
            vec![("K".to_string(), value.to_string())],
            "file was:\n{text}"
        );
    }

    #[test]
    fn nasty_values_read_back_exactly() {
        for value in [
            "",
            "plain",
            "jdbc:postgresql://db:5432/orange?ssl=true&x=1",
            "two\nlines\n",
            "\n",
            "it's",
            "say \"hi\"",
            "both ' and \"",
            "back\\slash",
            "trailing\\",
            "\\",
            "\\'",
            "\\\\",
            "\\n is not a newline",
            "$HOME",
            "${HOME}",
            "${HOME:-x}",
            "$$",
            "pa$$word",
            "a$",
            "# not a comment",
            "x #y",
            "a=b=c",
            "  leading and trailing  ",
            " ",
            "\t",
            "한국어 비밀번호",
            "emoji 🦀",
            "cr\r\nlf",
            "\r",
            "'",
            "\"",
            "'quoted'",
            "\"quoted\"",
            "it's $HOME\\n",
            "\\$x",
            "\\0101",
            "\u{7}\u{1b}[0m",
            "export X=1",
        ] {
            round_trip(value);
        }
    }

    #[test]
    fn random_values_read_back_exactly() {
        let alphabet: Vec<char> = "aZ09_-=#$ {}:?+'\"\\\n\r\t한🦀.,/@!`~%^&*()[]<>|;0"
            .chars()
            .collect();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..12);
            let value: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            round_trip(&value);
        }
    }

    #[test]
    fn keys() {
        for ok in [
            "A",
            "_A",
            "SERVER_SECRET",
            "spring.datasource.url",
            "a-b",
            "x1",
        ] {
            assert!(is_valid_key(ok), "{ok}");
        }
        for bad in ["", "1A", "-A", ".A", "A B", "db/URL", "A=B", "한"] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }
}
