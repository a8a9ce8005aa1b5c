//! The `meshd` binary's help, usage errors and error format.

use std::process::{Command, Output};

/// Every command of DESIGN.md section 1.
const COMMANDS: [&str; 9] = [
    "daemon",
    "join",
    "leave",
    "status",
    "peers",
    "bench",
    "docker-config",
    "controller",
    "demo",
];

fn meshd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshd"))
        .args(args)
        .env_remove("MESHD_STATE")
        .env_remove("MESHD_API")
        .env_remove("MESHD_TOKEN")
        .output()
        .expect("the meshd binary runs")
}

/// Runs `meshd <args>`, asserts success, returns stdout.
fn help(args: &[&str]) -> String {
    let output = meshd(args);
    assert!(
        output.status.success(),
        "meshd {args:?} failed: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

#[test]
fn top_level_help_lists_every_command() {
    let text = help(&["--help"]);
    for command in COMMANDS {
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(&format!("{command} "))),
            "`meshd --help` does not list `{command}`:\n{text}"
        );
    }
    assert!(text.contains("dual-stack"), "{text}");
    assert!(text.contains("meshd controller member authorize"), "{text}");
}

#[test]
fn join_help_explains_arguments() {
    let text = help(&["join", "--help"]);
    for needle in [
        "<NETWORK_ID>",
        "--controller",
        "--state",
        "MESHD_STATE",
        "Example",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

#[test]
fn status_help_explains_arguments() {
    let text = help(&["status", "--help"]);
    for needle in ["--json", "--state", "/var/lib/meshd"] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

#[test]
fn bench_help_explains_arguments() {
    let text = help(&["bench", "--help"]);
    for needle in [
        "<PEER>",
        "--seconds",
        "--streams",
        "--udp",
        "--rate",
        "--json",
        "--state",
        "9992",
        "Examples",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

#[test]
fn controller_help_lists_subcommands() {
    let text = help(&["controller", "--help"]);
    for needle in ["init", "run", "network", "member", "route", "replica"] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

#[test]
fn network_create_help_lists_options() {
    let text = help(&["controller", "network", "create", "--help"]);
    for needle in [
        "--name",
        "--v4-pool",
        "--container-pool",
        "--container-prefix",
        "--no-6plane",
        "--no-rfc4193",
        "--mtu",
        "--api",
        "--token",
        "--data",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

#[test]
fn join_without_network_id_is_a_usage_error() {
    let output = meshd(&["join"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn failing_command_prints_one_reason_line_and_exits_1() {
    // Fails today (not implemented) and later (no daemon behind this state dir).
    let output = meshd(&[
        "leave",
        "8056c2e21c000001",
        "--state",
        "/nonexistent/meshd-cli-test",
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("errors are UTF-8");
    let mut lines = stderr.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("meshd: "), "{stderr}");
    assert!(
        lines.all(|line| line.starts_with("hint: ")),
        "more than a reason and a hint: {stderr}"
    );
    assert!(output.stdout.is_empty(), "no output on failure");
}
