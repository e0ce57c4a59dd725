//! Property tests (proptest) of the parsers that read what others write: the dotenv writer and
//! reader, compose interpolation, the config loader and the compose parser. Each must never panic,
//! whatever the input; the writer's output must read back exactly. A case proptest shrinks to is
//! kept below as a plain regression test.

use proptest::prelude::*;

use crate::envfile;
use crate::redact::Secret;

fn no_env(_: &str) -> Option<String> {
    None
}

/// A variable name the env file accepts.
fn key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.-]{0,16}"
}

/// Any text without NUL, biased towards what dotenv readers treat specially.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\u{0}]{0,40}",
        proptest::collection::vec(
            prop_oneof![
                Just("'"),
                Just("\""),
                Just("\\"),
                Just("$"),
                Just("${"),
                Just("}"),
                Just("#"),
                Just(" "),
                Just("\n"),
                Just("\r"),
                Just("\r\n"),
                Just("\t"),
                Just("="),
                Just("`"),
                Just("é"),
                Just("\u{feff}"),
                Just("a"),
                Just("\\n"),
                Just("$$"),
            ],
            0..24,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// What the agent writes, compose (the same rules) reads back exactly, in order.
    #[test]
    fn the_env_file_reads_back_exactly(vars in proptest::collection::vec((key(), value()), 1..6)) {
        // Later wins, as in the agent's merge: keep the last of each name.
        let mut unique: Vec<(String, String)> = Vec::new();
        for (k, v) in vars {
            unique.retain(|(seen, _)| *seen != k);
            unique.push((k, v));
        }
        let secrets: Vec<(String, Secret)> =
            unique.iter().map(|(k, v)| (k.clone(), Secret::new(v.as_str()))).collect();
        let text = envfile::render(&secrets).expect("every value without NUL renders");
        let back = envfile::parse(&text, &no_env).expect("what the writer writes parses");
        prop_assert_eq!(back, unique);
    }

    /// Any text: an error with a line, or variables; never a panic.
    #[test]
    fn the_env_reader_never_panics(text in "[^\u{0}]{0,200}") {
        let _ = envfile::parse(&text, &no_env);
        let _ = envfile::parse(&text, &|name: &str| Some(format!("<{name}>")));
        let _ = envfile::parse_raw(&text, &no_env);
    }

    /// Interpolation never panics; text without `$` is left as it is; `$$` is one `$`.
    #[test]
    fn interpolation_is_total_and_leaves_plain_text(text in "[^\u{0}]{0,80}") {
        let _ = crate::interpolate::substitute(&text, &no_env);
        let _ = crate::interpolate::substitute(&text, &|_: &str| Some("v".into()));
        let plain = text.replace('$', "");
        let out = crate::interpolate::substitute(&plain, &no_env).unwrap();
        prop_assert_eq!(&out.value, &plain);
        let escaped = crate::interpolate::substitute(&format!("$${plain}"), &no_env).unwrap();
        prop_assert_eq!(escaped.value, format!("${plain}"));
    }

    /// The config loader and its merge: any text in agent.yaml and a fragment gives settings and
    /// problems, or an error; never a panic.
    #[test]
    fn the_config_loader_never_panics(main in yamlish(), fragment in yamlish()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, &main).unwrap();
        std::fs::create_dir_all(dir.path().join("agent.d")).unwrap();
        std::fs::write(dir.path().join("agent.d/10.yaml"), &fragment).unwrap();
        let _ = crate::config::check(&path);
        let _ = crate::config::load(&path);
    }

    /// The compose parser: any text is a project or an error naming the file; never a panic.
    #[test]
    fn the_compose_parser_never_panics(text in yamlish()) {
        let file = std::path::Path::new("/srv/p/docker-compose.yml");
        match crate::compose::from_str(&text, file, "p", &no_env) {
            Ok(_) => {}
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(message.contains("docker-compose.yml"), "{}", message);
            }
        }
    }
}

/// Text that is often YAML, often close to a config or compose file, sometimes neither.
fn yamlish() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("services"),
        Just("image"),
        Just("web"),
        Just("ports"),
        Just("environment"),
        Just("depends_on"),
        Just("condition"),
        Just("healthcheck"),
        Just("test"),
        Just("volumes"),
        Just("networks"),
        Just("secrets"),
        Just("project"),
        Just("env"),
        Just("parameters"),
        Just("name"),
        Just("path"),
        Just("files"),
        Just("source"),
        Just("compose"),
        Just("watch"),
        Just("interval"),
        Just("lifecycle"),
        Just("hook"),
        Just("registries"),
        Just("x"),
    ];
    let scalar = prop_oneof![
        Just("1".to_string()),
        Just("true".to_string()),
        Just("~".to_string()),
        Just("\"${A:-b}\"".to_string()),
        Just("[a, b]".to_string()),
        Just("{a: 1}".to_string()),
        Just("&a x".to_string()),
        Just("*a".to_string()),
        Just("'8080:80'".to_string()),
        Just("s3://b/k".to_string()),
        Just("/a/b".to_string()),
        "[a-z0-9:/ ._-]{0,12}",
    ];
    let line = (0usize..4, word, prop::bool::ANY, scalar).prop_map(|(indent, key, list, value)| {
        let pad = "  ".repeat(indent);
        match list {
            true => format!("{pad}- {key}: {value}"),
            false => format!("{pad}{key}: {value}"),
        }
    });
    prop_oneof![
        proptest::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n")),
        "[^\u{0}]{0,120}",
    ]
}
