//! Validated values of the config file. Each type refuses bad input while the YAML is being read,
//! so the error carries the file, line and key (serde_norway adds the location to it).

use std::fmt;
use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer};

/// Implements `Deserialize` for a newtype through its `parse` function.
macro_rules! deserialize_via_parse {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$ty>::parse(&s).map_err(de::Error::custom)
            }
        }
    };
}

/// A compose project name, as compose v2 accepts it: lowercase letters, digits, `_` and `-`,
/// starting with a letter or digit. It ends up in container and network names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if first_ok && rest_ok {
            Ok(ProjectName(s.to_string()))
        } else {
            Err(format!(
                "invalid project name {s:?}: use lowercase letters, digits, `_` and `-`, starting with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(ProjectName);

/// An absolute path without `..` components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsolutePath(PathBuf);

impl AbsolutePath {
    pub fn parse(s: &str) -> Result<Self, String> {
        let path = PathBuf::from(s);
        if !path.is_absolute() {
            return Err(format!("{s:?} must be an absolute path"));
        }
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(format!("{s:?} must not contain `..`"));
        }
        Ok(AbsolutePath(path))
    }

    pub fn into_path(self) -> PathBuf {
        self.0
    }

    pub fn as_path(&self) -> &std::path::Path {
        &self.0
    }
}
deserialize_via_parse!(AbsolutePath);

/// A Linux capability as docker takes it: `SYS_ADMIN`, also written `CAP_SYS_ADMIN` or in lower
/// case; kept in docker's spelling (upper case, no `CAP_`). `ALL` is every capability.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Capability(String);

impl Capability {
    pub fn parse(s: &str) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!(
                "{s:?} is not a capability name (such as SYS_ADMIN or NET_ADMIN)"
            ));
        }
        Ok(Capability(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(Capability);

/// A file path: absolute, or relative to `workdir`. Not empty, not a directory (`/` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePath(PathBuf);

impl FilePath {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.ends_with('/') || s.contains('\0') {
            return Err(format!("{s:?} is not a file path"));
        }
        Ok(FilePath(PathBuf::from(s)))
    }

    pub fn into_path(self) -> PathBuf {
        self.0
    }
}
deserialize_via_parse!(FilePath);

/// A file mode, written as an octal string ("0600"; an unquoted `0600` reads as that string too).
/// A YAML number (`600`, `0o600`) is refused rather than guessed at, and so are the setuid, setgid
/// and sticky bits: a file the agent writes as root must never run as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && digits.len() <= 4 && mode <= 0o777 => {
                Ok(FileMode(mode))
            }
            Ok(mode) if !digits.is_empty() && digits.len() <= 4 && mode <= 0o7777 => Err(format!(
                "file mode {s:?} sets the setuid, setgid or sticky bit: refused (a file the agent writes as root would run as root); use permission bits only, such as \"{:04o}\"",
                mode & 0o777
            )),
            _ => Err(format!(
                "invalid file mode {s:?}: expected an octal string such as \"0600\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl de::Visitor<'_> for ModeVisitor {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted octal file mode such as \"0600\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileMode, E> {
                FileMode::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<FileMode, E> {
                Err(E::custom(
                    "a file mode must be quoted, such as \"0640\": YAML reads an unquoted 640 as a decimal number",
                ))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FileMode, E> {
                self.visit_u64(n.unsigned_abs())
            }
        }
        d.deserialize_any(ModeVisitor)
    }
}

/// An SSM parameter name: letters, digits and `_ . - /`; a hierarchical name starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamName(String);

impl ParamName {
    pub fn parse(s: &str) -> Result<Self, String> {
        check_param_chars(s)?;
        if s.ends_with('/') {
            return Err(format!(
                "parameter name {s:?} must not end with `/` (use `path:` for a hierarchy)"
            ));
        }
        if s.contains('/') && !s.starts_with('/') {
            return Err(format!(
                "parameter name {s:?} has `/` but does not start with `/`"
            ));
        }
        Ok(ParamName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment of the name, the default variable name for a single parameter.
    pub fn basename(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}
deserialize_via_parse!(ParamName);

/// An SSM parameter hierarchy such as `/orange/prod/vars`, kept without its trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamPath(String);

impl ParamPath {
    pub fn parse(s: &str) -> Result<Self, String> {
        check_param_chars(s)?;
        if !s.starts_with('/') {
            return Err(format!("parameter path {s:?} must start with `/`"));
        }
        let trimmed = s.trim_end_matches('/');
        Ok(ParamPath(if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.into()
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part of a parameter's full name below this path (`/a/b` under `/a` is `b`).
    pub fn relative<'a>(&self, name: &'a str) -> Option<&'a str> {
        let prefix = if self.0 == "/" { "" } else { self.0.as_str() };
        name.strip_prefix(prefix)?.strip_prefix('/')
    }
}
deserialize_via_parse!(ParamPath);

/// A Secrets Manager secret, by name (letters, digits and `/ _ + = . @ -`, at most 512) or by ARN.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretId(String);

impl SecretId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(6, ':').collect();
            let ok = parts.len() == 6
                && parts[1] == "secretsmanager"
                && parts[4] == "secret"
                && !parts[5].is_empty();
            if !ok {
                return Err(format!(
                    "{s:?} is not a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>)"
                ));
            }
            return Ok(SecretId(s.to_string()));
        }
        if s.is_empty() || s.len() > 512 {
            return Err(format!("secret name {s:?} must be 1 to 512 characters"));
        }
        if let Some(c) = s
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(c)))
        {
            return Err(format!(
                "secret name {s:?} contains {c:?}: allowed are letters, digits and `/ _ + = . @ -`"
            ));
        }
        Ok(SecretId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment of the name (of an ARN: of the name it ends with, less the random
    /// suffix Secrets Manager adds), the default variable name for `format: value`.
    pub fn basename(&self) -> &str {
        let name = match self.0.strip_prefix("arn:") {
            Some(arn) => {
                let name = arn.rsplit(':').next().unwrap_or(arn);
                // A full ARN ends with `-` and six random characters.
                match name.rsplit_once('-') {
                    Some((base, suffix)) if suffix.len() == 6 => base,
                    _ => name,
                }
            }
            None => &self.0,
        };
        name.rsplit('/').next().unwrap_or(name)
    }
}
deserialize_via_parse!(SecretId);

/// A secret's version stage (`AWSCURRENT`, `AWSPREVIOUS` or one of the account's own labels).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionStage(String);

impl VersionStage {
    pub const CURRENT: &str = "AWSCURRENT";

    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty() && s.len() <= 256 && s.chars().all(|c| c.is_ascii_graphic());
        if !ok {
            return Err(format!(
                "version stage {s:?} must be 1 to 256 printable characters without spaces"
            ));
        }
        Ok(VersionStage(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(VersionStage);

fn check_param_chars(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 2048 {
        return Err(format!("parameter name {s:?} must be 1 to 2048 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "_.-/".contains(c)))
    {
        return Err(format!(
            "parameter name {s:?} contains {c:?}: allowed are letters, digits and `_ . - /`"
        ));
    }
    if s.contains("//") {
        return Err(format!(
            "parameter name {s:?} contains an empty segment (`//`)"
        ));
    }
    Ok(())
}

/// Whether `key` may name a variable in the env file: ASCII letters, digits, `_`, `.` and `-`,
/// not starting with a digit, `.` or `-`. compose-go accepts these (Spring Boot reads dotted names);
/// anything else (a `/` from a nested parameter path, a space) would be misread or refused.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c == '.' || c == '-' || c.is_ascii_alphanumeric())
}

/// The rule [`is_valid_key`] applies, for error messages.
pub const KEY_RULE: &str = "letters, digits, `_`, `.` and `-`, starting with a letter or `_`";

/// A variable name for the env file (see [`is_valid_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvKey(String);

impl EnvKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        if is_valid_key(s) {
            Ok(EnvKey(s.to_string()))
        } else {
            Err(format!("{s:?} is not a valid variable name ({})", KEY_RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(EnvKey);

/// An AWS region name such as `ap-northeast-2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionName(String);

impl RegionName {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            Ok(RegionName(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not an AWS region name (such as ap-northeast-2)"
            ))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}
deserialize_via_parse!(RegionName);

/// An `http://` or `https://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        match rest {
            Some(host)
                if !host.is_empty()
                    && !host.starts_with('/')
                    && !s.contains(char::is_whitespace) =>
            {
                Ok(EndpointUrl(s.to_string()))
            }
            _ => Err(format!("{s:?} is not an http:// or https:// URL")),
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}
deserialize_via_parse!(EndpointUrl);

/// An S3 object: `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{s:?} is not an s3://bucket/key URI"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no object key after the bucket"))?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(format!("{bucket:?} in {s:?} is not a valid S3 bucket name"));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(format!("{s:?} names a folder, not an object"));
        }
        if key.len() > 1024 || key.contains(char::is_control) {
            return Err(format!(
                "the key of {s:?} is longer than 1024 bytes or has control characters"
            ));
        }
        Ok(S3Uri {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}
deserialize_via_parse!(S3Uri);

/// A release signing key's public key, as KMS GetPublicKey gives it in PEM
/// (`-----BEGIN PUBLIC KEY-----`): an ECDSA P-256 SubjectPublicKeyInfo, as DER.
pub fn release_public_key(pem: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let body: String = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|rest| rest.trim_end().strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or("is not a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)")?
        .split_whitespace()
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "is not a PEM public key: its body is not base64".to_string())?;
    aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, &der)
        .map_err(|_| {
            "is not an ECDSA P-256 public key (a KMS key of spec ECC_NIST_P256, usage SIGN_VERIFY)"
                .to_string()
        })?;
    Ok(der)
}

/// An S3 "folder": `s3://bucket/` or `s3://bucket/prefix/` (the release store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Prefix {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
}

impl S3Prefix {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.ends_with('/') {
            return Err(format!(
                "{s:?} is not an s3://bucket/prefix/ (it must end with /)"
            ));
        }
        // The same rules as an object's URI, with a last key part that stands in for any name.
        let object = S3Uri::parse(&format!("{s}x"))?;
        Ok(S3Prefix {
            bucket: object.bucket,
            prefix: object.key[..object.key.len() - 1].to_string(),
        })
    }

    /// The object `name` under the prefix.
    pub fn object(&self, name: &str) -> S3Uri {
        S3Uri {
            bucket: self.bucket.clone(),
            key: format!("{}{name}", self.prefix),
        }
    }
}

impl fmt::Display for S3Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}
deserialize_via_parse!(S3Prefix);

/// Read here as it is in instance metadata's identity document.
pub use crate::instance::identity::AwsAccountId;

/// A user or group: a name as `useradd` accepts it, or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account(String);

impl Account {
    pub fn parse(s: &str) -> Result<Self, String> {
        let numeric = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        let name = s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.trim_end_matches('$')
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if numeric || name {
            Ok(Account(s.to_string()))
        } else {
            Err(format!("{s:?} is not a user or group name or a numeric id"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(Account);

/// An S3 object version id: printable, no spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionId(String);

impl VersionId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.len() <= 1024 && s.chars().all(|c| c.is_ascii_graphic()) {
            Ok(VersionId(s.to_string()))
        } else {
            Err(format!("{s:?} is not an S3 version id"))
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}
deserialize_via_parse!(VersionId);

/// A registry host as image references name it: `docker.io`, `127.0.0.1:5000`,
/// `123456789012.dkr.ecr.ap-northeast-2.amazonaws.com`. `index.docker.io` and `registry-1.docker.io`
/// mean `docker.io`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryHost(String);

impl RegistryHost {
    pub fn parse(s: &str) -> Result<Self, String> {
        let host = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let host = host.trim_end_matches('/');
        let ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            && !host.starts_with(['.', '-', ':']);
        if !ok {
            return Err(format!(
                "{s:?} is not a registry host such as docker.io or 127.0.0.1:5000"
            ));
        }
        Ok(RegistryHost(match host {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
            other => other.to_ascii_lowercase(),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(RegistryHost);

/// Where a mirror keeps another registry's repositories: path components as a repository name
/// has them (`docker-hub`, `mirror/hub`), no leading or trailing `/`. An ECR pull through cache
/// rule's `ecrRepositoryPrefix` is one (2 to 30 characters there).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepositoryPrefix(String);

impl RepositoryPrefix {
    pub fn parse(s: &str) -> Result<Self, String> {
        // A repository path component: lowercase letters and digits, separators between them.
        let component = |c: &str| {
            c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
                && !c.contains("..")
        };
        if s.len() > 255 || !s.split('/').all(component) {
            return Err(format!(
                "{s:?} is not a repository prefix such as docker-hub (lowercase letters, digits and . _ - between them, components joined by /, no / at either end)"
            ));
        }
        Ok(RepositoryPrefix(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(RepositoryPrefix);

/// A duration such as `90s`, `5m` or `1h 30m` (humantime), or `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub std::time::Duration);

impl DurationText {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim() == "0" {
            return Ok(DurationText(std::time::Duration::ZERO));
        }
        humantime::parse_duration(s)
            .map(DurationText)
            .map_err(|e| format!("{s:?} is not a duration such as 90s, 5m or 1h ({e})"))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl de::Visitor<'_> for DurationVisitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 90s or 5m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationText, E> {
                DurationText::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<DurationText, E> {
                match n {
                    0 => Ok(DurationText(std::time::Duration::ZERO)),
                    _ => Err(E::custom(format!("{n} has no unit: write {n}s or {n}m"))),
                }
            }
        }
        d.deserialize_any(DurationVisitor)
    }
}

/// Whether `s` is a release id: its creation time (UTC, to the millisecond) and 6 hex digits,
/// `20261207T163000123Z-3f9a1c` ([`crate::release::ReleaseId`] is the checked value; the config
/// checks `release.pin` with this, below it).
pub fn is_release_id(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 26
        && digits(0..8)
        && b[8] == b'T'
        && digits(9..18)
        && b[18] == b'Z'
        && b[19] == b'-'
        && b[20..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(DurationText::parse("5m").unwrap().0.as_secs(), 300);
        assert_eq!(DurationText::parse("1h 30m").unwrap().0.as_secs(), 5400);
        assert_eq!(DurationText::parse("0").unwrap().0.as_secs(), 0);
        assert!(DurationText::parse("5 minutes please").is_err());
        assert!(DurationText::parse("").is_err());
    }

    #[test]
    fn s3_uris() {
        let u = S3Uri::parse("s3://orange-deploy/conf/docker-compose.yml").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("orange-deploy", "conf/docker-compose.yml")
        );
        assert_eq!(u.to_string(), "s3://orange-deploy/conf/docker-compose.yml");
        for bad in [
            "orange/x",
            "s3://orange",
            "s3://orange/",
            "s3://Or/x",
            "s3://ab/x",
            "s3://a_b/x",
            "s3://bucket/dir/",
        ] {
            assert!(S3Uri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accounts() {
        for ok in ["root", "ubuntu", "_apt", "1000", "www-data", "machine$"] {
            assert!(Account::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Root", "a b", "-x", "../x"] {
            assert!(Account::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn project_names() {
        assert!(ProjectName::parse("orange").is_ok());
        assert!(ProjectName::parse("my_app-2").is_ok());
        for bad in ["", "Orange", "-x", "a b", "a.b", "오렌지"] {
            assert!(ProjectName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(FileMode::parse("0600"), Ok(FileMode(0o600)));
        assert_eq!(FileMode::parse("644"), Ok(FileMode(0o644)));
        assert_eq!(FileMode::parse("0o640"), Ok(FileMode(0o640)));
        for bad in ["", "0800", "rw-r--r--", "17777", "-1"] {
            assert!(FileMode::parse(bad).is_err(), "{bad}");
        }
        // Permission bits only: setuid, setgid and sticky are refused, saying which mode to use.
        let cases = [
            ("0777", Some(0o777)),
            ("0000", Some(0)),
            ("4755", None),
            ("2750", None),
            ("1777", None),
            ("0o4644", None),
            ("7777", None),
        ];
        for (text, want) in cases {
            match (FileMode::parse(text), want) {
                (Ok(mode), Some(want)) => assert_eq!(mode.0, want, "{text}"),
                (Err(why), None) => {
                    assert!(why.contains("setuid, setgid or sticky"), "{text}: {why}")
                }
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn secret_ids() {
        let name = SecretId::parse("prod/orange/db_password").unwrap();
        assert_eq!(name.basename(), "db_password");
        let arn = "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:prod/orange/db-a1B2c3";
        assert_eq!(SecretId::parse(arn).unwrap().basename(), "db");
        let partial = "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:prod/orange/db";
        assert_eq!(SecretId::parse(partial).unwrap().basename(), "db");
        for bad in [
            "",
            "a b",
            "prod/orange#1",
            "arn:aws:ssm:ap-northeast-2:123456789012:parameter/x",
            "arn:aws:secretsmanager:ap-northeast-2:123456789012:secret:",
        ] {
            assert!(SecretId::parse(bad).is_err(), "{bad}");
        }
        assert!(VersionStage::parse("AWSPREVIOUS").is_ok());
        assert!(VersionStage::parse("a b").is_err());
    }

    #[test]
    fn parameter_names_and_paths() {
        assert!(ParamName::parse("/orange/prod/env").is_ok());
        assert!(ParamName::parse("plain_name.v2").is_ok());
        for bad in [
            "",
            "orange/prod",
            "/orange/",
            "/a//b",
            "/a b",
            "/a$b",
            "/한",
        ] {
            assert!(ParamName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ParamName::parse("/orange/prod/SERVER_SECRET")
                .unwrap()
                .basename(),
            "SERVER_SECRET"
        );

        let path = ParamPath::parse("/orange/prod/vars/").unwrap();
        assert_eq!(path.as_str(), "/orange/prod/vars");
        assert_eq!(path.relative("/orange/prod/vars/DB_URL"), Some("DB_URL"));
        assert_eq!(path.relative("/orange/prod/vars/db/URL"), Some("db/URL"));
        assert_eq!(path.relative("/orange/prod/varsity/X"), None);
        assert_eq!(ParamPath::parse("/").unwrap().relative("/X"), Some("X"));
        assert!(ParamPath::parse("orange").is_err());
    }

    #[test]
    fn paths_and_urls() {
        assert!(AbsolutePath::parse("/srv/orange").is_ok());
        assert!(AbsolutePath::parse("srv").is_err());
        assert!(AbsolutePath::parse("/srv/../etc").is_err());
        assert!(FilePath::parse(".env").is_ok());
        assert!(FilePath::parse("dir/").is_err());
        assert!(EndpointUrl::parse("http://127.0.0.1:5000").is_ok());
        assert!(EndpointUrl::parse("127.0.0.1:5000").is_err());
        assert!(EndpointUrl::parse("http://").is_err());
        assert!(RegionName::parse("ap-northeast-2").is_ok());
        assert!(RegionName::parse("AP NORTH").is_err());
    }
}
