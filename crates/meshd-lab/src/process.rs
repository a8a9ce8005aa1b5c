//! Commands in a lab's namespaces: waited for ([`Lab::exec`], [`Lab::exec_all`]) or kept
//! running ([`Lab::spawn`]) until the lab's owner or the lab's drop stops them, by the
//! handle the lab holds (never by name or by a pid alone, which may have been recycled).

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Lab, LabError, interrupt};

/// How long [`Lab::exec`] lets a command run before it kills it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// A process the lab spawned; only the lab can signal or reap it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Its pid (`ip netns exec` execs the command, so this is the command itself).
    pub pid: u32,
}

#[derive(Debug)]
pub(crate) struct Spawned {
    label: String,
    child: Child,
}

impl Lab {
    fn command(&self, role: &str, argv: &[&str]) -> Command {
        assert!(!argv.is_empty(), "a command to run");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns(role)])
            .args(argv)
            .stdin(Stdio::null());
        if self.naming().own_process_groups {
            cmd.process_group(0);
        }
        cmd
    }

    /// Runs `argv` in a namespace of the lab (by role) and waits for it (at most
    /// [`EXEC_TIMEOUT`]).
    pub fn exec(&self, role: &str, argv: &[&str]) -> Result<Output, LabError> {
        self.exec_timeout(role, argv, EXEC_TIMEOUT)
    }

    /// Runs `argv` in a namespace of the lab; after `timeout` it is killed and the output
    /// has a failed status and a note on stderr.
    pub fn exec_timeout(
        &self,
        role: &str,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<Output, LabError> {
        Ok(self
            .exec_all(&[(role, argv)], timeout)?
            .pop()
            .expect("one output"))
    }

    /// Runs several commands at once, each in its role's namespace, and waits for all of
    /// them (each killed after `timeout`; all of them on an interrupt, which is the error);
    /// their outputs in order.
    pub fn exec_all(
        &self,
        commands: &[(&str, &[&str])],
        timeout: Duration,
    ) -> Result<Vec<Output>, LabError> {
        let mut running = Vec::with_capacity(commands.len());
        for (role, argv) in commands {
            let spawned = self
                .command(role, argv)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(source) => {
                    // Reap what started before failing.
                    for (mut child, _, _) in running {
                        wait_deadline(&mut child, Instant::now());
                    }
                    return Err(LabError::Spawn {
                        what: "`ip netns exec` (is iproute2 installed?)".to_owned(),
                        source,
                    });
                }
            };
            let out = drain(child.stdout.take().expect("piped"));
            let err = drain(child.stderr.take().expect("piped"));
            running.push((child, out, err));
        }
        let deadline = Instant::now() + timeout;
        let outputs = running
            .into_iter()
            .zip(commands)
            .map(|((mut child, out, err), (role, argv))| {
                let (status, timed_out) = wait_deadline(&mut child, deadline);
                let stdout = out.join().unwrap_or_default();
                let mut stderr = err.join().unwrap_or_default();
                if timed_out {
                    stderr.extend_from_slice(
                        format!("\n[lab: killed after {timeout:?} on {role}: {argv:?}]\n")
                            .as_bytes(),
                    );
                }
                Output {
                    status,
                    stdout,
                    stderr,
                }
            })
            .collect();
        interrupt::check()?;
        Ok(outputs)
    }

    /// Starts a long-running `argv` in a namespace of the lab, stdout and stderr appended
    /// to `log`. The lab keeps the process: stop it with [`Lab::kill`] / [`Lab::stop`], or
    /// let the lab's drop stop it.
    pub fn spawn(&self, role: &str, argv: &[&str], log: &Path) -> Result<Proc, LabError> {
        let opened = |source| LabError::Io {
            what: format!("cannot open {}", log.display()),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(opened)?;
        let child = self
            .command(role, argv)
            .stdout(file.try_clone().map_err(opened)?)
            .stderr(file)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: "`ip netns exec` (is iproute2 installed?)".to_owned(),
                source,
            })?;
        let proc = Proc { pid: child.id() };
        self.procs.borrow_mut().push(Spawned {
            label: format!("{role}: {}", argv.join(" ")),
            child,
        });
        Ok(proc)
    }

    /// The pids of the processes the lab started and still holds.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.borrow().iter().map(|p| p.child.id()).collect()
    }

    /// The exit status, if the process has exited (it stays the lab's until killed).
    pub fn exited(&self, proc: Proc) -> Option<ExitStatus> {
        let mut procs = self.procs.borrow_mut();
        let s = procs.iter_mut().find(|s| s.child.id() == proc.pid)?;
        s.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&self, proc: Proc) -> Option<ExitStatus> {
        let mut s = self.take(proc)?;
        let _ = s.child.kill();
        s.child.wait().ok()
    }

    /// SIGTERM, wait up to `grace` for it to exit, then SIGKILL; reaps it either way.
    /// The exit status, and whether it exited on its own.
    pub fn stop(&self, proc: Proc, grace: Duration) -> (Option<ExitStatus>, bool) {
        let Some(mut s) = self.take(proc) else {
            return (None, false);
        };
        if let Ok(Some(status)) = s.child.try_wait() {
            return (Some(status), true);
        }
        terminate(&s.child);
        let (status, timed_out) = wait_deadline(&mut s.child, Instant::now() + grace);
        (Some(status), !timed_out)
    }

    fn take(&self, proc: Proc) -> Option<Spawned> {
        let mut procs = self.procs.borrow_mut();
        let i = procs.iter().position(|s| s.child.id() == proc.pid)?;
        Some(procs.remove(i))
    }
}

/// Stops every process: SIGTERM and up to `grace` to exit (none: SIGKILL at once), then
/// SIGKILL; reaps them all. How many there were.
pub(crate) fn stop_all(procs: &mut Vec<Spawned>, grace: Duration) -> usize {
    let count = procs.len();
    let mut running: Vec<Spawned> = Vec::new();
    for mut p in procs.drain(..) {
        if let Ok(None) = p.child.try_wait() {
            if !grace.is_zero() {
                terminate(&p.child);
            }
            running.push(p);
        }
    }
    let deadline = Instant::now() + grace;
    for mut p in running {
        let (_, killed) = wait_deadline(&mut p.child, deadline);
        if killed && !grace.is_zero() {
            eprintln!(
                "lab: killed pid {} ({}) after {grace:?}",
                p.child.id(),
                p.label
            );
        }
    }
    count
}

/// SIGTERM to a child that is not reaped yet, so its pid is still certainly its own.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` until `deadline` (or an interrupt), then kills it; reaps it either
/// way. The status, and whether it had to be killed.
fn wait_deadline(child: &mut Child, deadline: Instant) -> (ExitStatus, bool) {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) if Instant::now() < deadline && interrupt::check().is_ok() => {
                std::thread::sleep(Duration::from_millis(10));
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

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}
