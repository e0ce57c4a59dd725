//! Registry mirrors (`registries[].mirror_of`): an image of a mirrored registry is pulled from its
//! mirror and from nowhere else. `nginx:1.27` with a mirror of `docker.io` at
//! `123456789012.dkr.ecr.eu-west-1.amazonaws.com` under `docker-hub` is pulled, and run, as
//! `123456789012.dkr.ecr.eu-west-1.amazonaws.com/docker-hub/library/nginx:1.27`: the path an ECR
//! pull through cache serves it at (Docker Hub's official images are under `library/`).
//!
//! The rewrite happens once, where the compose file is loaded to be run ([`super::load_text`]):
//! everything after it (the pull, the container's `Image`, a release's pin by digest) sees only
//! the mirror, so the engine is never asked for the upstream registry. There is no fallback to
//! the upstream when the mirror fails: a fleet that fell back together would meet the upstream's
//! pull limits all at once, the very thing the mirror is there for. An image already on the host
//! still runs while the mirror is down (see `engine::pull`), as for any registry.
//!
//! Each service keeps the reference as written ([`Service::written_image`]): a release pins images
//! under that name, so one release applies through any mirror (each region has its own ECR).

use super::reference::ImageRef;
use super::{Project, Service};
use crate::config::Registry;

/// The mirrors of a config, by the registry they stand in for.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The registry mirrored (`docker.io`).
    of: String,
    /// The mirror's host.
    server: String,
    /// Where the mirror keeps the upstream's repositories, without a trailing `/`.
    prefix: Option<String>,
}

impl Mirrors {
    pub fn of(registries: &[Registry]) -> Mirrors {
        let entries = registries
            .iter()
            .filter_map(|r| {
                let mirror = r.mirror.as_ref()?;
                Some(Entry {
                    of: mirror.of.as_str().to_string(),
                    server: r.server.as_str().to_string(),
                    prefix: mirror.prefix.as_ref().map(|p| p.as_str().to_string()),
                })
            })
            .collect();
        Mirrors { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The reference to pull and run `image` by: through the mirror of its registry, with its tag
    /// and digest. `None` when its registry has no mirror (or it is not a reference: the pull says
    /// why).
    pub fn route(&self, image: &str) -> Option<String> {
        let image = ImageRef::parse(image).ok()?;
        let entry = self.entries.iter().find(|e| e.of == image.registry)?;
        let mut path = String::new();
        if let Some(prefix) = &entry.prefix {
            path.push_str(prefix);
            path.push('/');
        }
        // Docker Hub's official images have an implicit `library/`, which a mirror spells out.
        if image.registry == "docker.io" && !image.repository.contains('/') {
            path.push_str("library/");
        }
        path.push_str(&image.repository);
        let mut routed = format!("{}/{path}", entry.server);
        if let Some(tag) = &image.tag {
            routed.push(':');
            routed.push_str(tag);
        }
        if let Some(digest) = &image.digest {
            routed.push('@');
            routed.push_str(digest);
        }
        Some(routed)
    }

    /// Routes every service's image through its mirror, keeping the reference as written.
    pub fn apply(&self, project: &mut Project) {
        if self.is_empty() {
            return;
        }
        for service in project.services.values_mut() {
            if let Some(routed) = self.route(&service.image) {
                let written = std::mem::replace(&mut service.image, routed);
                service.mirrored_from = Some(written);
            }
        }
    }

    /// `image` as an operator knows it: a reference a mirror serves is shown as the upstream's,
    /// and the mirror (`nginx:1.27 via 123456789012.dkr.ecr.eu-west-1.amazonaws.com/docker-hub`);
    /// any other as it is.
    pub fn describe(&self, image: &str) -> String {
        let Ok(parsed) = ImageRef::parse(image) else {
            return image.to_string();
        };
        for entry in self.entries.iter().filter(|e| e.server == parsed.registry) {
            let (rest, via) = match &entry.prefix {
                Some(prefix) => match parsed.repository.strip_prefix(&format!("{prefix}/")) {
                    Some(rest) => (rest, format!("{}/{prefix}", entry.server)),
                    None => continue,
                },
                None => (parsed.repository.as_str(), entry.server.clone()),
            };
            let mut name = match entry.of.as_str() {
                "docker.io" => match rest.strip_prefix("library/") {
                    Some(official) if !official.contains('/') => official.to_string(),
                    _ => rest.to_string(),
                },
                upstream => format!("{upstream}/{rest}"),
            };
            if let Some(tag) = &parsed.tag {
                name.push(':');
                name.push_str(tag);
            }
            if let Some(digest) = &parsed.digest {
                name.push('@');
                name.push_str(digest);
            }
            return format!("{name} via {via}");
        }
        image.to_string()
    }
}

impl Service {
    /// The image as the compose file names it (before a mirror routed it): what a release pins
    /// the digest under, and what an operator reads.
    pub fn written_image(&self) -> &str {
        self.mirrored_from.as_deref().unwrap_or(&self.image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{RegistryHost, RepositoryPrefix};
    use crate::config::{Mirror, RegistryAuth};

    fn mirror(server: &str, of: &str, prefix: Option<&str>) -> Registry {
        Registry {
            server: RegistryHost::parse(server).unwrap(),
            auth: RegistryAuth::Ecr,
            mirror: Some(Mirror {
                of: RegistryHost::parse(of).unwrap(),
                prefix: prefix.map(|p| RepositoryPrefix::parse(p).unwrap()),
            }),
        }
    }

    const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn images_of_a_mirrored_registry_are_routed_through_the_mirror() {
        let mirrors = Mirrors::of(&[
            mirror(ECR, "docker.io", Some("docker-hub")),
            mirror("127.0.0.1:5000", "ghcr.io", None),
            // Credentials alone: no mirror.
            Registry {
                server: RegistryHost::parse("quay.io").unwrap(),
                auth: RegistryAuth::Ecr,
                mirror: None,
            },
        ]);
        let hub = format!("{ECR}/docker-hub");
        let cases: &[(&str, Option<String>)] = &[
            // An official image: `library/`, and the tag as written (none: the engine's `latest`).
            ("nginx", Some(format!("{hub}/library/nginx"))),
            ("nginx:1.27", Some(format!("{hub}/library/nginx:1.27"))),
            // A user's repository: no `library/`.
            (
                "grafana/promtail:2.9",
                Some(format!("{hub}/grafana/promtail:2.9")),
            ),
            // Docker Hub however it is spelled.
            (
                "docker.io/library/nginx:1.27",
                Some(format!("{hub}/library/nginx:1.27")),
            ),
            (
                "docker.io/nginx:1.27",
                Some(format!("{hub}/library/nginx:1.27")),
            ),
            (
                "index.docker.io/library/nginx:1.27",
                Some(format!("{hub}/library/nginx:1.27")),
            ),
            (
                "registry-1.docker.io/grafana/loki",
                Some(format!("{hub}/grafana/loki")),
            ),
            // Digests kept, with or without a tag.
            (
                &*format!("nginx@{DIGEST}"),
                Some(format!("{hub}/library/nginx@{DIGEST}")),
            ),
            (
                &*format!("nginx:1.27@{DIGEST}"),
                Some(format!("{hub}/library/nginx:1.27@{DIGEST}")),
            ),
            // Another mirrored registry, without a prefix.
            (
                "ghcr.io/org/app:3",
                Some("127.0.0.1:5000/org/app:3".to_string()),
            ),
            // Registries with no mirror are left as they are.
            ("quay.io/prometheus/node-exporter:v1", None),
            (&*format!("{ECR}/orange/api:7"), None),
            ("127.0.0.1:5000/tester/web:1", None),
            ("localhost/app", None),
            // Not a reference: left for the pull to name.
            ("Not An Image", None),
        ];
        for (image, routed) in cases {
            assert_eq!(&mirrors.route(image), routed, "{image}");
        }
        assert_eq!(Mirrors::of(&[]).route("nginx"), None);
    }

    #[test]
    fn a_routed_image_is_described_as_the_upstream_one_via_the_mirror() {
        let mirrors = Mirrors::of(&[
            mirror(ECR, "docker.io", Some("docker-hub")),
            mirror("127.0.0.1:5000", "ghcr.io", None),
        ]);
        for (image, shown) in [
            ("nginx:1.27", format!("nginx:1.27 via {ECR}/docker-hub")),
            (
                "grafana/promtail:2.9",
                format!("grafana/promtail:2.9 via {ECR}/docker-hub"),
            ),
            (
                &*format!("nginx@{DIGEST}"),
                format!("nginx@{DIGEST} via {ECR}/docker-hub"),
            ),
            (
                "ghcr.io/org/app:3",
                "ghcr.io/org/app:3 via 127.0.0.1:5000".to_string(),
            ),
        ] {
            let routed = mirrors.route(image).unwrap();
            assert_eq!(mirrors.describe(&routed), shown, "{image}");
        }
        // Outside the prefix, or another registry: as it is.
        for image in [&*format!("{ECR}/orange/api:7"), "quay.io/a/b:1", "nginx"] {
            assert_eq!(mirrors.describe(image), image);
        }
    }

    #[test]
    fn a_project_keeps_each_image_as_written() {
        let mut project = crate::compose::from_str(
            "services:\n  web:\n    image: nginx:1.27\n  app:\n    image: 127.0.0.1:5000/tester/web:1\n",
            std::path::Path::new("/x/docker-compose.yml"),
            "p",
            &|_| None,
        )
        .unwrap();
        Mirrors::of(&[mirror(ECR, "docker.io", Some("docker-hub"))]).apply(&mut project);
        let web = &project.services["web"];
        assert_eq!(web.image, format!("{ECR}/docker-hub/library/nginx:1.27"));
        assert_eq!(web.written_image(), "nginx:1.27");
        let app = &project.services["app"];
        assert_eq!(app.image, "127.0.0.1:5000/tester/web:1");
        assert_eq!(
            (app.written_image(), &app.mirrored_from),
            (app.image.as_str(), &None)
        );
    }
}
