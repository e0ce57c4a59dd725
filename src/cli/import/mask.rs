//! What `import` quotes of a script line never shows a credential: a literal that follows a
//! password or token flag (`docker login -p`, `--password`), the value of a variable whose name
//! says secret (`DB_PASSWORD=...`), the password of a URL or of `-u user:password`, an AWS access
//! key id, what is piped into `--password-stdin`. A reference (`$VAR`, `$(command)`) is not a
//! credential and is shown; anything else in those places is replaced by [`MASK`].

/// What a masked literal is shown as.
pub const MASK: &str = "********";

/// The words of a line as they may be shown, and whether any was masked.
pub fn mask_words(words: &[String]) -> (Vec<String>, bool) {
    let words = &operators_apart(&super::script::merge_substitutions(words));
    let mut out: Vec<String> = words.to_vec();
    let mut masked = false;
    let login = is_docker_login(words);
    for i in 0..words.len() {
        let word = &words[i];
        if i > 0 && takes_secret(&words[i - 1], login) && !is_reference(word) {
            out[i] = MASK.to_string();
            masked = true;
            continue;
        }
        if i > 0 && !login && ["-u", "--user"].contains(&words[i - 1].as_str()) {
            if let Some((user, password)) = word.split_once(':') {
                if !password.is_empty() && !is_reference(password) {
                    out[i] = format!("{user}:{MASK}");
                    masked = true;
                    continue;
                }
            }
        }
        if let Some(shown) = mask_word(word, login) {
            out[i] = shown;
            masked = true;
        }
    }
    if mask_piped_into_stdin(words, &mut out) {
        masked = true;
    }
    (out, masked)
}

/// Words with `|`, `;` or `&&` glued to them (`echo pw|docker`) split from them, so that what
/// is piped is told apart from what reads it. Words with spaces were quoted: kept whole.
fn operators_apart(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for word in words {
        if word.contains(char::is_whitespace) || !word.contains(['|', ';', '&']) || word.len() < 2 {
            out.push(word.clone());
            continue;
        }
        let mut part = String::new();
        let mut chars = word.chars().peekable();
        while let Some(c) = chars.next() {
            let op = match (c, chars.peek()) {
                ('|', Some('|')) | ('&', Some('&')) => {
                    chars.next();
                    format!("{c}{c}")
                }
                ('|', _) | (';', _) => c.to_string(),
                _ => {
                    part.push(c);
                    continue;
                }
            };
            out.extend((!part.is_empty()).then(|| std::mem::take(&mut part)));
            out.push(op);
        }
        out.extend((!part.is_empty()).then_some(part));
    }
    out
}

/// Whether the line logs in to a registry (where `-p` is the password).
fn is_docker_login(words: &[String]) -> bool {
    words
        .windows(2)
        .any(|w| w[0].ends_with("docker") && w[1] == "login")
}

/// Whether a flag's value is a secret: `--password X`, `--token X`, `-p X` of `docker login`,
/// `-u user:password` of curl.
fn takes_secret(flag: &str, login: bool) -> bool {
    if login && flag == "-p" {
        return true;
    }
    let Some(name) = flag.strip_prefix("--") else {
        return false;
    };
    // `--password-stdin`, `--secret-id`: where a secret is, not the secret.
    let names_a_place = ["-stdin", "-file", "-id", "-name", "-arn"]
        .iter()
        .any(|end| name.ends_with(end));
    !name.contains('=') && secret_name(name) && !names_a_place
}

/// Whether a flag or variable name says its value is secret.
fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "token",
        "secret",
        "apikey",
        "api-key",
        "api_key",
        "credential",
        "private",
        "access_key",
        "access-key",
    ]
    .iter()
    .any(|part| name.contains(part))
}

/// Whether `word` is only a reference to a value kept elsewhere: `$VAR`, `${VAR}`, `$(command)`.
fn is_reference(word: &str) -> bool {
    let braced = word.starts_with("${") && word.ends_with('}') && word.matches('}').count() == 1;
    let bare = word
        .strip_prefix('$')
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()));
    let command = word.starts_with("$(") && word.ends_with(')');
    braced || bare || command
}

/// `word` with its secret part masked, when it has one.
fn mask_word(word: &str, login: bool) -> Option<String> {
    if let Some((flag, value)) = word.split_once('=') {
        let flag_secret = flag.starts_with("--") && takes_secret(flag, login);
        let name = flag.trim_start_matches('-');
        let variable = !flag.starts_with('-') && secret_name(name);
        if (flag_secret || variable) && !value.is_empty() && !is_reference(value) {
            return Some(format!("{flag}={MASK}"));
        }
    }
    if login {
        if let Some(value) = word.strip_prefix("-p").filter(|v| !v.is_empty()) {
            if !is_reference(value) {
                return Some(format!("-p{MASK}"));
            }
        }
    }
    if let Some(shown) = mask_userinfo(word) {
        return Some(shown);
    }
    mask_access_keys(word)
}

/// A URL's password (`https://user:pw@host`) masked.
fn mask_userinfo(word: &str) -> Option<String> {
    let (scheme, rest) = word.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    if password.is_empty() || is_reference(password) {
        return None;
    }
    Some(format!(
        "{scheme}://{user}:{MASK}@{host}{}",
        &rest[authority_end..]
    ))
}

/// `word` with the AWS access key ids in it masked, when it has any.
fn mask_access_keys(word: &str) -> Option<String> {
    let keys: Vec<&str> = word
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| {
            w.len() == 20
                && (w.starts_with("AKIA") || w.starts_with("ASIA"))
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        .collect();
    if keys.is_empty() {
        return None;
    }
    Some(
        keys.iter()
            .fold(word.to_string(), |w, key| w.replace(key, MASK)),
    )
}

/// `echo pw | docker login --password-stdin`: the words of what is piped into a command that
/// reads a password from its input, masked (unless they are references).
fn mask_piped_into_stdin(words: &[String], out: &mut [String]) -> bool {
    let mut masked = false;
    let mut start = 0;
    for (i, word) in words.iter().enumerate() {
        if word == "|" || word == "|&" {
            let reads_password = words[i + 1..]
                .iter()
                .take_while(|w| !["|", "&&", "||", ";"].contains(&w.as_str()))
                .any(|w| w.ends_with("-stdin"));
            let writer = &words[start..i];
            let echoes = writer.first().is_some_and(|w| w == "echo" || w == "printf");
            if reads_password && echoes {
                for j in start + 1..i {
                    if !words[j].starts_with('-') && !is_reference(&words[j]) {
                        out[j] = MASK.to_string();
                        masked = true;
                    }
                }
            }
        }
        if ["|", "|&", "&&", "||", ";"].contains(&word.as_str()) {
            start = i + 1;
        }
    }
    masked
}

/// Words shown as a line: joined by spaces, a word quoted only when it has spaces or quotes
/// (but for a command substitution's, shown as written).
pub fn show(words: &[String]) -> String {
    let shown: Vec<String> = words
        .iter()
        .map(|w| {
            let plain = !w.contains(char::is_whitespace) && !w.contains(['\'', '"']);
            if w.is_empty() || !(plain || w.contains("$(")) {
                shell_words::quote(w).into_owned()
            } else {
                w.clone()
            }
        })
        .collect();
    super::script::one_line(&shown.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(line: &str) -> String {
        let words = shell_words::split(line).unwrap();
        let (words, _) = mask_words(&words);
        show(&words)
    }

    #[test]
    fn credentials_are_masked_and_references_kept() {
        let table = [
            (
                "docker login -u bot -p 'pw 1' r.example.com",
                "docker login -u bot -p ******** r.example.com",
            ),
            (
                "docker login -u bot -pHunter2 r.example.com",
                "docker login -u bot -p******** r.example.com",
            ),
            (
                "docker login --password=Hunter2 --username bot",
                "docker login --password=******** --username bot",
            ),
            (
                "docker login -u bot -p \"$DOCKER_PW\"",
                "docker login -u bot -p $DOCKER_PW",
            ),
            (
                "echo Hunter2 | docker login -u bot --password-stdin",
                "echo ******** | docker login -u bot --password-stdin",
            ),
            (
                "echo \"$PW\" | docker login -u bot --password-stdin",
                "echo $PW | docker login -u bot --password-stdin",
            ),
            (
                "export DB_PASSWORD=Hunter2 API_TOKEN=$(cat /t)",
                "export DB_PASSWORD=******** API_TOKEN=$(cat /t)",
            ),
            (
                "git clone https://bot:Hunter2@git.example.com/a.git",
                "git clone https://bot:********@git.example.com/a.git",
            ),
            (
                "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
                "export AWS_ACCESS_KEY_ID=********",
            ),
            ("mycli --token abc", "mycli --token ********"),
            (
                "curl -u admin:Sekr1t https://example.com/hook",
                "curl -u admin:******** https://example.com/hook",
            ),
            (
                "aws secretsmanager get-secret-value --secret-id prod/db",
                "aws secretsmanager get-secret-value --secret-id prod/db",
            ),
            (
                "echo Hunter2|docker login -u bot --password-stdin",
                "echo ******** | docker login -u bot --password-stdin",
            ),
            (
                "aws configure set k AKIAIOSFODNN7EXAMPLE",
                "aws configure set k ********",
            ),
            (
                "docker compose -p lemon up -d",
                "docker compose -p lemon up -d",
            ),
        ];
        for (line, want) in table {
            assert_eq!(masked(line), want, "{line}");
        }
    }
}
