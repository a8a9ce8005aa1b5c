//! `meshd demo`, run for real: it builds its namespaces, pings across the mesh over every
//! family, and leaves nothing behind — also when interrupted with SIGINT halfway.
//!
//! Needs root, iproute2 and ping (like `mesh_e2e`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MESHD: &str = env!("CARGO_BIN_EXE_meshd");

/// Runs `meshd demo` to its end (at most 90 s): exit status, stdout, stderr.
fn run_demo() -> (std::process::ExitStatus, u32, String, String) {
    let mut child = Command::new(MESHD)
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshd runs");
    let pid = child.id();
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait(&mut child, Duration::from_secs(90));
    (
        status,
        pid,
        out.join().expect("stdout"),
        err.join().expect("stderr"),
    )
}

fn wait(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            // The demo itself is ours to kill; its lab will be left, and reported below.
            let _ = child.kill();
            panic!(
                "meshd demo did not finish within {timeout:?} (status {:?})",
                child.wait()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nothing of the demo run with this pid is left: no namespace `mshdemo-<pid>-*`, no link
/// `md<pid in hex>*` in our namespace, none of `pids` alive, no process at all whose
/// command line names the demo's directory, and no directory.
fn assert_nothing_left(demo_pid: u32, pids: &[u32]) {
    let tag = format!("mshdemo-{demo_pid}");
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        !list.lines().any(|l| l.starts_with(&format!("{tag}-"))),
        "a namespace of the demo is left:\n{list}"
    );
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip runs");
    let links = String::from_utf8_lossy(&out.stdout);
    let link_tag = format!("md{demo_pid:x}");
    assert!(
        !links.contains(&format!(" {link_tag}")),
        "a link of the demo is left:\n{links}"
    );
    for pid in pids {
        // Either gone, or (recycled already) someone else's.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&tag),
            "process {pid} started by the demo is still running"
        );
    }
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(&format!("/{tag}/")),
            "a process of the demo is left: {:?} {cmdline}",
            entry.file_name()
        );
    }
    let dir = std::env::temp_dir().join(&tag);
    assert!(!dir.exists(), "{} is left", dir.display());
}

/// The pids on the `lab mshdemo-<pid>: ...; pids 1 2 3; ...` line.
fn lab_pids(stdout: &str) -> Vec<u32> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("lab mshdemo-"))
        .unwrap_or_else(|| panic!("no `lab` line:\n{stdout}"));
    let pids = line
        .split("; ")
        .find_map(|part| part.strip_prefix("pids "))
        .unwrap_or_else(|| panic!("no pids on {line:?}"));
    pids.split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect()
}

#[test]
fn demo_pings_across_the_mesh_and_cleans_up() {
    let started = Instant::now();
    let (status, pid, stdout, stderr) = run_demo();
    let took = started.elapsed();
    eprintln!("--- meshd demo ({took:?})\n{stdout}\n--- stderr\n{stderr}");
    assert!(status.success(), "meshd demo failed: {status}\n{stderr}");
    for step in 1..=9 {
        assert!(
            stdout.contains(&format!("[{step}/9] ")),
            "step {step} missing"
        );
    }
    assert!(stdout.contains("ACCESS_DENIED"), "{stdout}");
    assert!(stdout.contains("authorized 3 nodes: OK"), "{stdout}");
    // n1's `meshd status`, in human form.
    assert!(stdout.contains("$ meshd status"), "{stdout}");
    assert!(stdout.contains(" OK  revision "), "{stdout}");

    // The ping table: n1 to n2 and n3, over every family, all ok with an RTT.
    let header = stdout
        .lines()
        .position(|l| l.starts_with("from ") && l.contains("family"))
        .unwrap_or_else(|| panic!("no ping table:\n{stdout}"));
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(header + 1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 6, "2 peers x 3 families:\n{stdout}");
    for to in ["n2", "n3"] {
        for family in ["IPv4", "RFC4193", "6PLANE"] {
            let row = rows
                .iter()
                .find(|r| r[1] == to && r[2] == family)
                .unwrap_or_else(|| panic!("no row n1 -> {to} {family}:\n{stdout}"));
            assert_eq!(row[0], "n1", "{row:?}");
            assert_eq!(row[4], "ok", "n1 -> {to} over {family}: {row:?}");
            let rtt: f64 = row[5].parse().expect("an RTT");
            assert!(rtt > 0.0 && row[6] == "ms", "{row:?}");
        }
    }
    // The container matrix: 2 containers on each of 3 hosts; each reaches the 4 on the
    // other hosts over IPv4 and IPv6, and none is pinged on its own host.
    let header = stdout
        .lines()
        .position(|l| l.starts_with("container pings (IPv4/IPv6)"))
        .unwrap_or_else(|| panic!("no container table:\n{stdout}"));
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(header + 2)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 6, "3 hosts x 2 containers:\n{stdout}");
    for row in &rows {
        assert_eq!(row.len(), 7, "{row:?}");
        let host = &row[0][..2];
        let cells = &row[1..];
        assert_eq!(
            cells.iter().filter(|c| **c == "ok/ok").count(),
            4,
            "{row:?}"
        );
        assert_eq!(cells.iter().filter(|c| **c == "-").count(), 2, "{row:?}");
        assert!(host.starts_with('n'), "{row:?}");
    }
    assert!(
        stdout.contains("6/6 pings ok, 48/48 container pings ok"),
        "the final line is missing:\n{stdout}"
    );
    assert!(
        stdout.contains("cleaned up: stopped 4 processes"),
        "{stdout}"
    );

    let pids = lab_pids(&stdout);
    assert_eq!(pids.len(), 4, "a controller and 3 daemons: {pids:?}");
    assert_nothing_left(pid, &pids);
    assert!(
        took < Duration::from_secs(20),
        "the demo should take under 20 s, took {took:?}"
    );
}

#[test]
fn demo_cleans_up_after_sigint() {
    let mut child = Command::new(MESHD)
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshd runs");
    let pid = child.id();
    let mut err = child.stderr.take().expect("piped");
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // Read until the containers are wired (the daemons run, every namespace exists), then
    // interrupt it as a Ctrl-C would.
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut seen = Vec::new();
    let mut pids: Vec<u32> = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("UTF-8");
        if let Some(rest) = line.split("(pid ").nth(1) {
            pids.push(
                rest.split(')')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("pid"),
            );
        }
        if line.starts_with("[4/9] ") {
            let list = line.split("(pids ").nth(1).expect("pids").split(')');
            for p in list.take(1).flat_map(str::split_whitespace) {
                pids.push(p.split('=').nth(1).expect("role=pid").parse().expect("pid"));
            }
        }
        let wired = line.starts_with("[8/9] ");
        seen.push(line);
        if wired {
            break;
        }
    }
    assert_eq!(pids.len(), 4, "controller and daemons: {seen:#?}");
    for p in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{p}")).exists(),
            "{p} runs"
        );
    }
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = wait(&mut child, Duration::from_secs(30));
    let stderr = err.join().expect("stderr");
    eprintln!(
        "{}\n{}\n--- stderr\n{stderr}",
        seen.join("\n"),
        rest.join("\n")
    );
    assert_eq!(status.code(), Some(1), "interrupted: {status}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("cleaned up: stopped 4 processes, deleted 11 namespaces")),
        "{rest:?}"
    );
    assert_nothing_left(pid, &pids);
}

#[test]
fn demo_without_root_asks_for_sudo() {
    // nobody may not be able to reach the build directory (a checkout under /root, say):
    // run a copy from a directory anyone can enter.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.path().join("meshd");
    std::fs::copy(MESHD, &copy).expect("copy the binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // setpriv (util-linux) drops to nobody; without it there is nothing to test here.
    let Ok(out) = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .arg("demo")
        .output()
    else {
        eprintln!("no setpriv: skipped");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("meshd: ") && lines[0].contains("needs root"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("hint: ") && lines[1].contains("sudo"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing made, nothing to clean up");
}
