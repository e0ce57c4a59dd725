//! The instance's user data, as far as it is the agent's: the `#kicky-agent` YAML document in it,
//! alone, one part of a cloud-init multipart MIME document, or gzip-compressed. Anything else in
//! user data (a shell script, a cloud-config) is not the agent's and is left alone.

use std::io::Read;

use anyhow::{bail, Context, Result};

/// The first line of a user-data document (or part) meant for the agent.
pub const MARKER: &str = "#kicky-agent";
/// User data is at most 16 KiB; compressed, it may not expand beyond this.
const MAX_EXPANDED: u64 = 1 << 20;

/// The `#kicky-agent` document in `raw` user data: the whole of it, or the part of a MIME
/// multipart document that starts with the marker; gzip-compressed or not. `None` when there is
/// none (a plain shell script or cloud-config: not the agent's).
pub fn extract(raw: &[u8]) -> Result<Option<String>> {
    let raw = gunzip_if_compressed(raw).context("user data is gzip data that does not expand")?;
    let raw = raw.as_slice();
    let text = String::from_utf8_lossy(raw);
    if starts_with_marker(&text) {
        return whole_text(raw).map(Some);
    }
    if !looks_like_mime(&text) {
        return Ok(None);
    }
    match find_part(raw, starts_with_marker) {
        Some(body) => whole_text(&body).map(Some),
        None => Ok(None),
    }
}

/// The user-data shell script in `raw`, for `kicky-agent import`: the whole of it, or the first
/// part of a MIME multipart document that starts with `#!`; gzip-compressed or not. `None` for a
/// multipart document without one. Bytes that are not UTF-8 are replaced (the script is read,
/// never run).
pub fn shell_script(raw: &[u8]) -> Result<Option<String>> {
    let raw = gunzip_if_compressed(raw).context("gzip data that does not expand")?;
    let text = String::from_utf8_lossy(&raw);
    if !looks_like_mime(&text) {
        return Ok(Some(
            text.trim_start_matches('\u{feff}').replace("\r\n", "\n"),
        ));
    }
    let script = find_part(&raw, |part| part.starts_with("#!"));
    Ok(script.map(|body| String::from_utf8_lossy(&body).replace("\r\n", "\n")))
}

/// The body of the first part of the multipart document `raw` whose text `wanted` says yes to
/// (gunzipped when it is compressed).
fn find_part(raw: &[u8], wanted: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    for part in message.parts.iter() {
        if matches!(part.body, mail_parser::PartType::Multipart(_)) {
            continue;
        }
        // Without a transfer encoding, the part's bytes as they are: the parser's text reading
        // folds lines as mail does, which would take YAML's indentation away.
        let body = match part.encoding {
            mail_parser::Encoding::None => {
                let (start, end) = (part.offset_body as usize, part.offset_end as usize);
                raw.get(start..end).unwrap_or_default().to_vec()
            }
            _ => part.contents().to_vec(),
        };
        let body = match gunzip_if_compressed(&body) {
            Ok(body) => body,
            Err(_) => continue,
        };
        if wanted(String::from_utf8_lossy(&body).trim_start_matches('\u{feff}')) {
            return Some(body);
        }
    }
    None
}

fn starts_with_marker(text: &str) -> bool {
    let first = text.trim_start_matches('\u{feff}').lines().next();
    first.is_some_and(|line| line.trim_end() == MARKER)
}

fn looks_like_mime(text: &str) -> bool {
    text.lines().take(20).any(|l| {
        l.to_ascii_lowercase()
            .starts_with("content-type: multipart/")
    })
}

fn whole_text(raw: &[u8]) -> Result<String> {
    match std::str::from_utf8(raw) {
        Ok(text) => Ok(text.trim_start_matches('\u{feff}').replace("\r\n", "\n")),
        Err(e) => bail!(
            "the {MARKER} document in user data is not UTF-8 (byte {})",
            e.valid_up_to()
        ),
    }
}

fn gunzip_if_compressed(raw: &[u8]) -> Result<Vec<u8>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(MAX_EXPANDED + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_EXPANDED {
        bail!("it expands beyond {MAX_EXPANDED} bytes");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    const DOC: &str = "#kicky-agent\nproject: lemon\nenv:\n  file: app.env\n";

    const MULTIPART: &str = "Content-Type: multipart/mixed; boundary=\"==BOUNDARY==\"\r\n\
MIME-Version: 1.0\r\n\
\r\n\
--==BOUNDARY==\r\n\
Content-Type: text/cloud-config; charset=\"us-ascii\"\r\n\
\r\n\
#cloud-config\r\n\
packages: [htop]\r\n\
\r\n\
--==BOUNDARY==\r\n\
Content-Type: text/x-kicky-agent; charset=\"us-ascii\"\r\n\
\r\n\
#kicky-agent\r\n\
project: lemon\r\n\
env:\r\n\
\x20 file: app.env\r\n\
\r\n\
--==BOUNDARY==\r\n\
Content-Type: text/x-shellscript\r\n\
\r\n\
#!/bin/sh\r\n\
echo hello\r\n\
--==BOUNDARY==--\r\n";

    #[test]
    fn the_document_is_found_however_user_data_carries_it() {
        let want = Some(DOC.to_string());
        assert_eq!(extract(DOC.as_bytes()).unwrap(), want, "alone");
        assert_eq!(extract(&gzip(DOC.as_bytes())).unwrap(), want, "gzip");
        let part = extract(MULTIPART.as_bytes()).unwrap().unwrap();
        assert!(
            part.starts_with("#kicky-agent\nproject: lemon\nenv:\n  file: app.env"),
            "{part:?}"
        );
        let part = extract(&gzip(MULTIPART.as_bytes())).unwrap().unwrap();
        assert!(part.contains("project: lemon"), "multipart, gzip: {part}");
        // A base64-encoded part, as some tools write them.
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(DOC);
        let b64 = MULTIPART.replace(
            "Content-Type: text/x-kicky-agent; charset=\"us-ascii\"\r\n\r\n#kicky-agent\r\nproject: lemon\r\nenv:\r\n  file: app.env\r\n",
            &format!("Content-Type: text/x-kicky-agent\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"),
        );
        assert_ne!(b64, MULTIPART);
        assert_eq!(extract(b64.as_bytes()).unwrap(), want, "base64 part");
    }

    #[test]
    fn the_shell_script_is_found_however_user_data_carries_it() {
        let script = "#!/bin/bash\ncd /srv\n";
        let want = Some(script.to_string());
        assert_eq!(shell_script(script.as_bytes()).unwrap(), want, "alone");
        assert_eq!(
            shell_script(&gzip(script.as_bytes())).unwrap(),
            want,
            "gzip"
        );
        let part = shell_script(&gzip(MULTIPART.as_bytes())).unwrap().unwrap();
        assert!(part.starts_with("#!/bin/sh\necho hello"), "{part:?}");
        let without = MULTIPART.replace("#!/bin/sh", "echo hi");
        assert_eq!(shell_script(without.as_bytes()).unwrap(), None);
    }

    #[test]
    fn user_data_that_is_not_the_agents_is_no_override() {
        for other in [
            "#!/bin/bash\naws ssm get-parameter ...\n",
            "#cloud-config\npackages: [htop]\n",
            "",
            "#kicky-agents\nproject: x\n",
            "project: x\n",
        ] {
            assert_eq!(extract(other.as_bytes()).unwrap(), None, "{other:?}");
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused() {
        let bomb = gzip(&vec![b'#'; (MAX_EXPANDED + 10) as usize]);
        assert!(bomb.len() < 16 * 1024);
        let err = extract(&bomb).unwrap_err();
        assert!(format!("{err:#}").contains("expands beyond"), "{err:#}");
    }
}
