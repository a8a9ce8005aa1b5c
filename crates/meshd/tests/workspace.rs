//! The shape of the workspace, as ARCHITECTURE.md draws it: which crate may depend on which,
//! no null cipher in what ships, `unsafe` only in the engine's `sys`, and no source file
//! that has outgrown one job.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each workspace crate and the workspace crates its normal (shipped) code may use.
/// Dependencies point inward: the binary at the top, the sans-IO core at the bottom.
const ALLOWED: &[(&str, &[&str])] = &[
    ("meshd-proto", &[]),
    ("meshd-io", &[]),
    ("meshd-engine", &["meshd-proto"]),
    ("meshd-channel", &["meshd-proto"]),
    (
        "meshd-controller",
        &["meshd-proto", "meshd-channel", "meshd-io"],
    ),
    (
        "meshd-node",
        &["meshd-proto", "meshd-engine", "meshd-channel", "meshd-io"],
    ),
    ("meshd-lab", &["meshd-proto", "meshd-engine"]),
    ("meshd-demo", &["meshd-proto", "meshd-node", "meshd-lab"]),
    (
        "meshd",
        &[
            "meshd-proto",
            "meshd-engine",
            "meshd-channel",
            "meshd-io",
            "meshd-node",
            "meshd-controller",
            "meshd-demo",
        ],
    ),
    (
        "meshd-benches",
        &["meshd-proto", "meshd-channel", "meshd-controller"],
    ),
];

/// Longest source file, inline tests included.
const MAX_LINES: usize = 1000;

/// Longest file of the binary: arguments with their help, and a call into a library.
const MAX_BINARY_LINES: usize = 300;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/meshd sits two levels below the workspace root")
        .to_owned()
}

fn cargo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// Every workspace package with the workspace packages it depends on, by kind
/// (`None` for normal, `Some("dev")`, `Some("build")`).
fn workspace_deps() -> BTreeMap<String, Vec<(String, Option<String>)>> {
    let text = cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]);
    let meta: serde_json::Value = serde_json::from_str(&text).expect("cargo metadata is JSON");
    let packages = meta["packages"].as_array().expect("a package list");
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("a dependency list")
                .iter()
                .filter(|d| d["name"].as_str().is_some_and(|n| names.contains(n)))
                .map(|d| {
                    (
                        d["name"].as_str().unwrap_or_default().to_owned(),
                        d["kind"].as_str().map(str::to_owned),
                    )
                })
                .collect();
            (p["name"].as_str().unwrap_or_default().to_owned(), deps)
        })
        .collect()
}

#[test]
fn dependencies_point_inward() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (package, deps) in workspace_deps() {
        let Some(may) = allowed.get(package.as_str()) else {
            wrong.push(format!(
                "{package} is not in this test's map (ARCHITECTURE.md)"
            ));
            continue;
        };
        for (dep, kind) in deps {
            if kind.is_none() && !may.contains(&dep.as_str()) {
                wrong.push(format!("{package} depends on {dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_node_never_depends_on_the_controller_not_even_in_tests() {
    let deps = workspace_deps();
    let node = deps
        .get("meshd-node")
        .expect("meshd-node is a workspace crate");
    assert!(
        node.iter().all(|(dep, _)| dep != "meshd-controller"),
        "{node:?}"
    );
}

#[test]
fn what_ships_has_no_null_cipher() {
    for selection in [&["--workspace"][..], &["-p", "meshd"][..]] {
        let mut args = vec![
            "tree",
            "--offline",
            "-e",
            "normal,features",
            "-i",
            "meshd-proto",
        ];
        args.extend_from_slice(selection);
        let tree = cargo(&args);
        assert!(tree.contains("meshd-proto"), "{tree}");
        assert!(!tree.contains("null-crypto"), "{selection:?}:\n{tree}");
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crate_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let src = krate.expect("a directory entry").path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    files
}

#[test]
fn no_source_file_over_a_thousand_lines() {
    let long: Vec<String> = crate_sources()
        .into_iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(&path).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by job: {long:#?}");
}

#[test]
fn the_binary_only_parses_arguments_and_calls_libraries() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/meshd/src"), &mut files);
    assert!(files.len() > 10, "found only {} files", files.len());
    let long: Vec<String> = files
        .into_iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(&path).ok()?.lines().count();
            (lines > MAX_BINARY_LINES).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "move what these do into a library crate, keep the arguments: {long:#?}"
    );
}

#[test]
fn unsafe_code_is_forbidden_outside_the_engines_sys() {
    let mut missing = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let dir = krate.expect("a directory entry").path();
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for top in ["src/lib.rs", "src/main.rs"] {
            let Ok(text) = std::fs::read_to_string(dir.join(top)) else {
                continue;
            };
            if name == "meshd-engine" {
                // Module by module: `sys` is allowed, every other module forbids.
                for line in text
                    .lines()
                    .filter(|l| l.starts_with("pub mod ") || l.starts_with("mod "))
                {
                    let attrs = text[..text.find(line).unwrap_or(0)]
                        .lines()
                        .next_back()
                        .unwrap_or_default();
                    let want = if line.ends_with(" sys;") {
                        "#[allow(unsafe_code)]"
                    } else {
                        "#[forbid(unsafe_code)]"
                    };
                    if attrs.trim() != want {
                        missing.push(format!("meshd-engine: `{line}` lacks {want}"));
                    }
                }
            } else if !text.contains("#![forbid(unsafe_code)]") {
                missing.push(format!("{name}/{top}"));
            }
        }
    }
    let benches = std::fs::read_to_string(root().join("benches/lib.rs")).expect("benches/lib.rs");
    if !benches.contains("#![forbid(unsafe_code)]") {
        missing.push("benches/lib.rs".to_owned());
    }
    assert!(missing.is_empty(), "{missing:#?}");
}
