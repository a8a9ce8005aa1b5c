//! The files in deploy/ start meshd with arguments the current binary accepts: each
//! command line (systemd `ExecStart=`, the Dockerfile's `CMD`, the compose `command:`) is
//! parsed by `meshd <args> --help`, which fails on any unknown flag or subcommand.

use std::path::PathBuf;
use std::process::Command;

const MESHD: &str = env!("CARGO_BIN_EXE_meshd");

fn deploy(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `meshd <args> --help` exits 0: clap accepted every argument before `--help`.
fn assert_parses(source: &str, args: &[&str]) {
    let out = Command::new(MESHD)
        .args(args)
        .arg("--help")
        .output()
        .expect("meshd runs");
    assert!(
        out.status.success(),
        "{source}: `meshd {}` is not accepted: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The words of `ExecStart=` after the binary, without `$VARIABLES` (set per host).
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/meshd"), "{line}");
    words
        .filter(|w| !w.starts_with('$'))
        .map(str::to_owned)
        .collect()
}

/// The strings of a one-line JSON array, as Docker's exec form (`CMD [...]`) has them.
fn json_words(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn systemd_units_start_meshd_with_valid_arguments() {
    for (unit, first) in [
        ("systemd/meshd.service", "daemon"),
        ("systemd/meshd-controller.service", "controller"),
    ] {
        let args = exec_start(&deploy(unit));
        assert_eq!(args[0], first, "{unit}");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_parses(unit, &args);
    }
}

#[test]
fn the_image_and_the_compose_example_start_the_daemon_with_valid_arguments() {
    let dockerfile = deploy("docker/Dockerfile");
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD line");
    let args = json_words(cmd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(args[0], "daemon");
    assert_parses("Dockerfile CMD", &args);
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/meshd"]"#));

    let compose = deploy("compose/docker-compose.yml");
    let start = compose.find("command: [").expect("a command:") + "command: ".len();
    let end = start + compose[start..].find(']').expect("the array ends") + 1;
    let text: String = compose[start..end]
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let args = json_words(&text);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_parses("docker-compose.yml command", &args);
    for needed in ["network_mode: host", "NET_ADMIN", "/dev/net/tun"] {
        assert!(
            compose.contains(needed),
            "the compose example needs {needed}"
        );
    }
}
