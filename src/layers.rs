//! The crate's layers, checked: every `crate::` path in `src/` must name a module of the same
//! layer or one below (see the table in the crate's doc), and the top-level modules must import
//! each other without a cycle. A new top-level module fails the test until it is given a layer.
//!
//! The paths are read from the source text (comments left out), not from the compiler: what a
//! module names is what its reader has to know, whether it is a `use`, a path in an expression or
//! a macro of another module. Only `crate::` paths are followed: no file of the crate climbs to
//! the root with `super::` (a top-level file has nothing above it but the root).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top: a module may use its own layer's modules and those of the layers below.
/// `properties` and `layers` are tests of the whole crate.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "atomic", "digest", "error", "harden", "logging", "progress", "redact", "retry",
            "timeline", "yaml",
        ],
    ),
    ("instance", &["instance"]),
    ("config", &["config"]),
    (
        "pure logic",
        &[
            "compose",
            "envfile",
            "iam",
            "inputs",
            "interpolate",
            "release",
        ],
    ),
    ("world", &["aws", "engine"]),
    ("drivers", &["lifecycle", "sync"]),
    ("daemon", &["daemon"]),
    ("cli", &["cli"]),
    ("tests", &["layers", "properties"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// One path of one file to another top-level module.
#[derive(Debug, Clone)]
struct Import {
    from: String,
    to: String,
    at: String,
}

/// The top-level module a file of `src/` belongs to (`None`: `lib.rs`, `main.rs`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// `line` without its comment: from a `//` at its start or after a blank (`s3://` in a string
/// is not one).
fn code_of(line: &str) -> &str {
    if line.trim_start().starts_with("//") {
        return "";
    }
    match line.find(" //") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first step of each path a `crate::` at the start of `rest` names, and whether it is a
/// macro (`crate::out!`): one for `crate::x`, each of the group's for `crate::{x, y::z}`.
fn first_steps(rest: &str) -> Vec<(&str, bool)> {
    fn step(at: &str) -> (&str, bool) {
        let name = identifier(at);
        (name, at[name.len()..].starts_with('!'))
    }
    let Some(group) = rest.strip_prefix('{') else {
        return vec![step(rest)];
    };
    let mut steps = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                steps.push(step(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
    steps
}

/// Each `crate::` path in `code` (comments taken out): where it starts, its first step, and
/// whether that is a macro.
fn crate_paths(code: &str) -> Vec<(usize, &str, bool)> {
    let mut paths = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        for (step, is_macro) in first_steps(&code[i + "crate::".len()..]) {
            if !step.is_empty() {
                paths.push((i, step, is_macro));
            }
        }
    }
    paths
}

/// The crate's macros (`#[macro_export]`: named `crate::name!`), each with its module.
fn exported_macros(src: &Path, files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut macros = BTreeMap::new();
    for file in files {
        let Some(module) = top_module(src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = line.trim_start().strip_prefix("macro_rules!") else {
                continue;
            };
            let exported = lines[..i]
                .iter()
                .rev()
                .take_while(|l| {
                    l.trim_start().starts_with("#[") || l.trim_start().starts_with("///")
                })
                .any(|l| l.contains("macro_export"));
            if exported {
                macros.insert(identifier(name.trim_start()).to_string(), module.clone());
            }
        }
    }
    macros
}

/// Every path from one top-level module to another in the files of `src`.
fn imports(src: &Path) -> Vec<Import> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let macros = exported_macros(src, &files);
    let mut found = Vec::new();
    for file in &files {
        let Some(from) = top_module(src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let code: Vec<&str> = text.lines().map(code_of).collect();
        let code = code.join("\n");
        for (offset, step, is_macro) in crate_paths(&code) {
            let to = match is_macro {
                true => macros.get(step).cloned(),
                false => Some(step.to_string()),
            };
            let Some(to) = to.filter(|to| *to != from) else {
                continue;
            };
            let line = code[..offset].matches('\n').count() + 1;
            let at = format!(
                "{}:{line}",
                file.strip_prefix(src.parent().unwrap()).unwrap().display()
            );
            found.push(Import {
                from: from.clone(),
                to,
                at,
            });
        }
    }
    found
}

/// The cycles of the graph: for each set of modules that all reach each other, its modules and
/// one cycle through them (the first again at the end).
fn cycles(graph: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<(Vec<String>, Vec<String>)> {
    fn reach<'a>(from: &'a str, graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut next = vec![from];
        while let Some(node) = next.pop() {
            for to in graph.get(node).into_iter().flatten() {
                if seen.insert(*to) {
                    next.push(to);
                }
            }
        }
        seen
    }
    /// A path from `at` back to `start` within `within`, depth first.
    fn back<'a>(
        start: &'a str,
        at: &'a str,
        within: &BTreeSet<&'a str>,
        graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
    ) -> bool {
        path.push(at);
        for to in graph.get(at).into_iter().flatten() {
            if *to == start {
                path.push(start);
                return true;
            }
            if within.contains(to) && !path.contains(to) && back(start, to, within, graph, path) {
                return true;
            }
        }
        path.pop();
        false
    }
    let reached: BTreeMap<&str, BTreeSet<&str>> = graph
        .keys()
        .map(|node| (*node, reach(node, graph)))
        .collect();
    let mut found = Vec::new();
    let mut placed = BTreeSet::new();
    for (node, reaches) in &reached {
        if placed.contains(node) || !reaches.contains(node) {
            continue;
        }
        let component: BTreeSet<&str> = reaches
            .iter()
            .copied()
            .filter(|other| reached.get(other).is_some_and(|r| r.contains(node)))
            .collect();
        placed.extend(component.iter().copied());
        let mut path = Vec::new();
        if back(node, node, &component, graph, &mut path) {
            let members = component.iter().map(|n| n.to_string()).collect();
            found.push((members, path.iter().map(|n| n.to_string()).collect()));
        }
    }
    found
}

/// What is wrong with `imports` against the table: upward imports, unknown modules, a cycle.
fn problems(imports: &[Import], modules: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for module in modules {
        if layer_of(module).is_none() {
            problems.push(format!(
                "module `{module}` has no layer: add it to LAYERS in src/layers.rs"
            ));
        }
    }
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for import in imports {
        graph
            .entry(import.from.as_str())
            .or_default()
            .insert(import.to.as_str());
        if let (Some(from), Some(to)) = (layer_of(&import.from), layer_of(&import.to)) {
            if to > from {
                problems.push(format!(
                    "{}: `{}` ({}) uses `{}` ({}), a layer above it",
                    import.at, import.from, LAYERS[from].0, import.to, LAYERS[to].0
                ));
            }
        }
    }
    for (members, cycle) in cycles(&graph) {
        let mut problem = format!(
            "{} import each other in a cycle, such as {}:",
            members.join(", "),
            cycle.join(" → ")
        );
        for pair in cycle.windows(2) {
            if let Some(i) = imports
                .iter()
                .find(|i| i.from == pair[0] && i.to == pair[1])
            {
                problem.push_str(&format!("\n    {} → {} at {}", i.from, i.to, i.at));
            }
        }
        problems.push(problem);
    }
    problems
}

/// The top-level modules `lib.rs` declares.
fn declared(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")
        })
        .map(|rest| identifier(rest).to_string())
        .collect()
}

#[test]
fn imports_run_down_the_layers_without_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let imports = imports(&src);
    assert!(
        imports.len() > 50,
        "only {} imports between modules found: the reading is broken",
        imports.len()
    );
    let modules = declared(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let problems = problems(&imports, &modules);
    assert!(
        problems.is_empty(),
        "{} problem(s) with the layers:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The reading finds each kind of path, and the check catches what it is for.
#[test]
fn the_check_catches_an_upward_import_and_a_cycle() {
    let steps = |code| {
        crate_paths(code)
            .into_iter()
            .map(|(_, step, is_macro)| (step, is_macro))
            .collect::<Vec<_>>()
    };
    assert_eq!(steps("use crate::config::Settings;"), [("config", false)]);
    assert_eq!(
        steps("use crate::{\n    aws::s3,\n    config::{self, Settings},\n    sync,\n};"),
        [("aws", false), ("config", false), ("sync", false)]
    );
    assert_eq!(
        steps("crate::outln!(\"{}\", crate::redact::text(x)); kicky_crate::x"),
        [("outln", true), ("redact", false)]
    );
    assert_eq!(code_of("    let x = 1; // crate::sync"), "    let x = 1;");
    assert_eq!(code_of("/// [`crate::sync`]"), "");
    assert_eq!(
        code_of(r#"let u = "s3://b/k"; "#),
        r#"let u = "s3://b/k"; "#
    );
    let import = |from: &str, to: &str| Import {
        from: from.into(),
        to: to.into(),
        at: "src/x.rs:1".into(),
    };
    let modules: BTreeSet<String> = ["config", "sync", "lifecycle"].map(String::from).into();
    assert!(problems(&[import("sync", "config")], &modules).is_empty());
    let up = problems(&[import("config", "sync")], &modules);
    assert!(up[0].contains("a layer above"), "{up:?}");
    let round = problems(
        &[import("sync", "lifecycle"), import("lifecycle", "sync")],
        &modules,
    );
    assert!(
        round[0].contains("cycle, such as lifecycle → sync → lifecycle"),
        "{round:?}"
    );
    let unknown = problems(&[], &["newcomer".to_string()].into());
    assert!(unknown[0].contains("no layer"), "{unknown:?}");
}
