//! Real Docker on the hosts of a lab, for `containers_e2e`: a `dockerd` (which starts its
//! own containerd) in a host's network namespace, with its data, exec root, socket, config
//! and log in a temp dir of its own; a busybox image made on the spot; `docker` and
//! `docker-compose` command lines against one daemon; and a cleanup that also runs when the
//! test panics ([`Docker`]'s drop).
//!
//! Debian 12's packages: `docker.io` 20.10 (`/usr/sbin/dockerd`, and the client called by
//! its full path, `/usr/bin/docker`, so that another client earlier in PATH is never
//! used), `docker-compose` 1.29 and `busybox-static` (the image is that one static binary).

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use meshd_lab::Lab;
use serde_json::Value;

pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const DOCKER: &str = "/usr/bin/docker";
pub const COMPOSE: &str = "/usr/bin/docker-compose";
/// A static busybox (Debian's `busybox-static`): the whole image.
pub const BUSYBOX: &str = "/usr/bin/busybox";
/// The image every daemon imports ([`Docker::import_image`]).
pub const IMAGE: &str = "meshd-busybox:lab";
/// The commands the image has, as links to busybox in `/bin`.
const APPLETS: [&str; 9] = [
    "sh", "ping", "ping6", "sleep", "ip", "nc", "cat", "wget", "tr",
];
/// How long one `docker` or `docker-compose` command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon gets to exit after SIGTERM (its containers are gone by then, and
/// daemon.json says `"shutdown-timeout": 1`).
const STOP_GRACE: Duration = Duration::from_secs(15);

/// One `dockerd` in a lab host's network namespace.
#[derive(Debug)]
pub struct Dockerd {
    /// The lab role whose namespace it runs in.
    pub role: String,
    /// Its directory: `daemon.json`, `data/`, `exec/`, `sock`, `pid`, `log`.
    pub dir: PathBuf,
    /// The `dockerd` process (`nsenter` execs it); `None` once reaped.
    child: Option<Child>,
}

impl Dockerd {
    /// `DOCKER_HOST` for this daemon.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("sock").display())
    }

    /// `env DOCKER_HOST=… DOCKER_CONFIG=… <program> <args>`: a command line that talks to
    /// this daemon only, with a client config of its own (none of the machine's contexts or
    /// credential helpers).
    pub fn argv(&self, program: &str, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "env".to_owned(),
            format!("DOCKER_HOST={}", self.host()),
            format!("DOCKER_CONFIG={}", self.dir.join("client").display()),
            program.to_owned(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// `docker <args>` against this daemon, in its host's namespace; its stdout, trimmed.
    /// Panics with the output and the daemon's log if it fails.
    pub fn docker(&self, lab: &Lab, args: &[&str]) -> String {
        all_ok(lab, &[(self, self.argv(DOCKER, args))]).remove(0)
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Runs every `(daemon, argv)` at once in its daemon's host namespace; each must succeed
/// within [`COMMAND_TIMEOUT`]. Their stdouts, trimmed, in order.
pub fn all_ok(lab: &Lab, commands: &[(&Dockerd, Vec<String>)]) -> Vec<String> {
    let outs = run_all(lab, commands, COMMAND_TIMEOUT);
    outs.iter()
        .zip(commands)
        .map(|(out, (d, argv))| {
            assert!(
                out.status.success(),
                "{}: {argv:?} failed ({}):\n{}{}\n--- dockerd log (tail)\n{}",
                d.role,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                d.log_tail()
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect()
}

/// Runs every `(daemon, argv)` at once in its daemon's host namespace, each within
/// `timeout`; their outputs, in order, whatever their exit status.
pub fn run_all(
    lab: &Lab,
    commands: &[(&Dockerd, Vec<String>)],
    timeout: Duration,
) -> Vec<std::process::Output> {
    let argvs: Vec<Vec<&str>> = commands
        .iter()
        .map(|(_, argv)| argv.iter().map(String::as_str).collect())
        .collect();
    let run: Vec<(&str, &[&str])> = commands
        .iter()
        .zip(&argvs)
        .map(|((d, _), argv)| (d.role.as_str(), argv.as_slice()))
        .collect();
    lab.exec_all(&run, timeout).expect("lab")
}

/// The daemons of one test, and their cleanup ([`Docker::stop`], also on drop).
#[derive(Debug)]
pub struct Docker {
    pub daemons: Vec<Dockerd>,
    /// Every daemon's directory is in it; `None` once removed.
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl Docker {
    /// A temp dir under /tmp (not `$TMPDIR`): socket paths must stay short, 108 bytes.
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mshd-docker-")
            .tempdir_in("/tmp")
            .expect("a temp dir");
        Docker {
            daemons: Vec::new(),
            root: tmp.path().to_owned(),
            tmp: Some(tmp),
        }
    }

    /// The temp dir with every daemon's files.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Starts a dockerd in `role`'s network namespace with `config` as its daemon.json;
    /// [`Docker::wait_up`] waits for it. Its index in [`Docker::daemons`].
    ///
    /// `nsenter --net`, not `ip netns exec`: the latter remounts /sys in a mount namespace
    /// of its own, where dockerd finds no cgroups. The daemon shares our mount namespace
    /// (its mounts are all under its directory: see [`Docker::stop`]) and our process
    /// group.
    pub fn start(&mut self, lab: &Lab, role: &str, config: &Value) -> usize {
        let dir = self.root.join(role);
        fs::create_dir(&dir).expect("a dir for dockerd");
        let sock = dir.join("sock");
        assert!(
            sock.as_os_str().len() < 100,
            "{} is too long for a unix socket",
            sock.display()
        );
        let file = dir.join("daemon.json");
        fs::write(&file, serde_json::to_string_pretty(config).expect("JSON")).expect("write");
        let log = File::create(dir.join("log")).expect("a log file");
        let path = |p: &str| dir.join(p).to_str().expect("UTF-8 path").to_owned();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.netns(role)))
            .arg(DOCKERD)
            .args(["--data-root", &path("data"), "--exec-root", &path("exec")])
            .args([
                "--pidfile",
                &path("pid"),
                "--config-file",
                &path("daemon.json"),
            ])
            .args(["--host", &format!("unix://{}", path("sock"))])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nsenter {DOCKERD}: {e}"));
        self.daemons.push(Dockerd {
            role: role.to_owned(),
            dir,
            child: Some(child),
        });
        self.daemons.len() - 1
    }

    /// Waits until every daemon answers `docker version`; panics with the log of one that
    /// exits or does not answer within `timeout`. The servers' version.
    pub fn wait_up(&mut self, lab: &Lab, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut versions: Vec<Option<String>> = vec![None; self.daemons.len()];
        loop {
            for (d, version) in self.daemons.iter_mut().zip(&mut versions) {
                if version.is_some() {
                    continue;
                }
                let child = d.child.as_mut().expect("started");
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{}: dockerd exited with {status}:\n{}",
                        d.role,
                        d.log_tail()
                    );
                }
                let argv = d.argv(DOCKER, &["version", "--format", "{{.Server.Version}}"]);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let out = lab
                    .exec_timeout(&d.role, &argv, Duration::from_secs(5))
                    .expect("lab");
                if out.status.success() {
                    *version = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
                }
            }
            if versions.iter().all(Option::is_some) {
                let mut versions: Vec<String> = versions.into_iter().flatten().collect();
                versions.dedup();
                return versions.join(", ");
            }
            let silent: Vec<&Dockerd> = self
                .daemons
                .iter()
                .zip(&versions)
                .filter(|(_, v)| v.is_none())
                .map(|(d, _)| d)
                .collect();
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within {timeout:?} on {}:\n{}",
                silent
                    .iter()
                    .map(|d| d.role.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                silent
                    .iter()
                    .map(|d| format!("--- {} dockerd log (tail)\n{}", d.role, d.log_tail()))
                    .collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`IMAGE`], made here (busybox and its links in `/bin`, as a tar) and imported into
    /// every daemon.
    pub fn import_image(&self, lab: &Lab) {
        let image = self.root.join("image");
        let bin = image.join("bin");
        fs::create_dir_all(&bin).expect("a dir");
        fs::copy(BUSYBOX, bin.join("busybox")).unwrap_or_else(|e| {
            panic!("cannot copy {BUSYBOX} (Debian's busybox-static): {e}");
        });
        for applet in APPLETS {
            symlink("busybox", bin.join(applet)).expect("a link");
        }
        let tar = self.root.join("image.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(&image)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .expect("tar runs");
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tar = tar.to_str().expect("UTF-8 path");
        let imports: Vec<(&Dockerd, Vec<String>)> = self
            .daemons
            .iter()
            .map(|d| (d, d.argv(DOCKER, &["import", tar, IMAGE])))
            .collect();
        all_ok(lab, &imports);
    }

    /// Removes every container, stops every dockerd (SIGTERM; SIGKILL after
    /// [`STOP_GRACE`], and then its containerd too, by the pid file dockerd keeps for it),
    /// unmounts whatever is still mounted under the temp dir and removes it. What went
    /// wrong, one line each: empty when everything is gone. Runs once; later calls do
    /// nothing.
    pub fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for d in &mut self.daemons {
            let running = d
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            if !running {
                continue;
            }
            match run(&d.argv(DOCKER, &["ps", "--all", "--quiet"])) {
                Ok(ids) if ids.is_empty() => {}
                Ok(ids) => {
                    let mut args = vec!["rm", "--force"];
                    args.extend(ids.split_whitespace());
                    if let Err(e) = run(&d.argv(DOCKER, &args)) {
                        problems.push(format!("{}: docker rm: {e}", d.role));
                    }
                }
                Err(e) => problems.push(format!("{}: docker ps: {e}", d.role)),
            }
            terminate(d.child.as_ref().expect("running"));
        }
        let deadline = Instant::now() + STOP_GRACE;
        for d in &mut self.daemons {
            let Some(mut child) = d.child.take() else {
                continue;
            };
            let (_, killed) = wait_deadline(&mut child, deadline);
            if killed {
                problems.push(format!(
                    "{}: dockerd did not exit within {STOP_GRACE:?} of SIGTERM: killed\n{}",
                    d.role,
                    d.log_tail()
                ));
                let pidfile = d.dir.join("exec/containerd/containerd.pid");
                if let Some(pid) = fs::read_to_string(pidfile)
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok())
                {
                    // Only if it is still the containerd of this daemon's exec root.
                    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmdline).contains(d.dir.to_str().unwrap_or("-")) {
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                }
            }
        }
        let mut mounts = self.mounts();
        // The deepest first.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            problems.push(format!("left mounted: {m}"));
            let out = Command::new("umount").args(["--lazy", &m]).output();
            if !out.is_ok_and(|o| o.status.success()) {
                problems.push(format!("cannot unmount {m}"));
            }
        }
        if let Some(tmp) = self.tmp.take() {
            let dir = tmp.path().display().to_string();
            if let Err(e) = tmp.close() {
                problems.push(format!("cannot remove {dir}: {e}"));
            }
        }
        problems
    }

    /// Mount points under the temp dir, from /proc/self/mountinfo.
    pub fn mounts(&self) -> Vec<String> {
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = self.root.to_str().expect("UTF-8 path");
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(root))
            .map(str::to_owned)
            .collect()
    }

    /// Processes whose command line names the temp dir: the daemons, their containerd and
    /// its shims. None once stopped.
    pub fn processes(&self) -> Vec<String> {
        let root = self.root.to_str().expect("UTF-8 path");
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").expect("/proc").flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(root) {
                found.push(format!("{pid}: {}", cmdline.trim()));
            }
        }
        found
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("docker cleanup: {problem}");
        }
    }
}

/// Runs `argv` in our own namespace (the daemon's socket is a file: any namespace reaches
/// it), for at most [`COMMAND_TIMEOUT`]: its stdout, trimmed, or what went wrong.
fn run(argv: &[String]) -> Result<String, String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {argv:?}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).trim().to_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let (status, killed) = wait_deadline(&mut child, Instant::now() + COMMAND_TIMEOUT);
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    match (killed, status.success()) {
        (true, _) => Err(format!("killed after {COMMAND_TIMEOUT:?}: {stderr}")),
        (false, true) => Ok(stdout),
        (false, false) => Err(format!("{status}: {stderr}")),
    }
}

/// SIGTERM to a child that is not reaped yet, so its pid is still certainly its own.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` until `deadline`, then kills it; reaps it either way. Its status, and
/// whether it had to be killed.
fn wait_deadline(child: &mut Child, deadline: Instant) -> (ExitStatus, bool) {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                // A child that cannot be waited for is reported as killed by SIGKILL.
                let status = child.wait().unwrap_or_else(|_| ExitStatus::from_raw(9));
                return (status, true);
            }
        }
    }
}
