//! Image references (a service's `image:`) as the Docker Engine reads them:
//! `[registry/]repository[:tag][@digest]`, with `docker.io` and `library/` filled in as the engine
//! does. Pure, and part of the model rather than of the engine: the IAM policy reads them too
//! (which ECR repositories the role may pull).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io` for Docker Hub (however it is spelled), else the host (and port) the
    /// reference starts with.
    pub registry: String,
    /// The repository as written after the registry (`tester/web`, `nginx`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    original: String,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<ImageRef, String> {
        let bad = |why: &str| format!("{reference:?} is not an image reference: {why}");
        if reference.is_empty() || reference.contains(char::is_whitespace) {
            return Err(bad("empty or has blanks"));
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) if digest.contains(':') => (name, Some(digest.to_string())),
            Some(_) => return Err(bad("a digest is algorithm:hex")),
            None => (reference, None),
        };
        // A tag is after the last `:` that comes after the last `/` (a registry port comes before).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name, None),
        };
        if tag.as_deref() == Some("") || name.is_empty() || name.ends_with('/') {
            return Err(bad("empty name or tag"));
        }
        let (registry, repository) = match name.split_once('/') {
            // Docker Hub's other names are Docker Hub (as `registries[].server` reads them).
            Some(("index.docker.io" | "registry-1.docker.io", rest)) => {
                ("docker.io".to_string(), rest.to_string())
            }
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository names are lowercase"));
        }
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
            original: reference.to_string(),
        })
    }

    /// What the engine's image create takes as `fromImage` (everything but the tag and digest).
    pub fn from_image(&self) -> String {
        match self.original.split_once('@') {
            Some((name, _)) => strip_tag(name).to_string(),
            None => strip_tag(&self.original).to_string(),
        }
    }

    /// What the engine's image create takes as `tag`: the digest, the tag, or `latest`.
    pub fn tag_or_digest(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".to_string())
    }
}

fn strip_tag(name: &str) -> &str {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(r: &str) -> (String, String, Option<String>, Option<String>) {
        let i = ImageRef::parse(r).unwrap();
        (i.registry, i.repository, i.tag, i.digest)
    }

    #[test]
    fn engine_rules() {
        let s = |x: &str| x.to_string();
        assert_eq!(parts("nginx"), (s("docker.io"), s("nginx"), None, None));
        assert_eq!(
            parts("grafana/promtail:2.9"),
            (s("docker.io"), s("grafana/promtail"), Some(s("2.9")), None)
        );
        assert_eq!(
            parts("127.0.0.1:5000/tester/web:1"),
            (s("127.0.0.1:5000"), s("tester/web"), Some(s("1")), None)
        );
        assert_eq!(
            parts("index.docker.io/library/nginx"),
            (s("docker.io"), s("library/nginx"), None, None)
        );
        assert_eq!(
            parts("localhost/app"),
            (s("localhost"), s("app"), None, None)
        );
        assert_eq!(
            parts("123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/orange@sha256:abc"),
            (
                s("123456789012.dkr.ecr.ap-northeast-2.amazonaws.com"),
                s("orange"),
                None,
                Some(s("sha256:abc"))
            )
        );
        let r = ImageRef::parse("127.0.0.1:5000/tester/web:1").unwrap();
        assert_eq!(
            (r.from_image(), r.tag_or_digest()),
            (s("127.0.0.1:5000/tester/web"), s("1"))
        );
        let r = ImageRef::parse("127.0.0.1:5000/tester/web").unwrap();
        assert_eq!(
            (r.from_image(), r.tag_or_digest()),
            (s("127.0.0.1:5000/tester/web"), s("latest"))
        );
        for bad in ["", "a b", "web:", "Tester/Web", "x@nodigest"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
