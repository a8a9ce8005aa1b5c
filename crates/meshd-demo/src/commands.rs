//! `meshd` commands run inside the lab, as a user on each host would run them, and what
//! the demo reads from their output.

use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use meshd_proto::NetworkId;
use serde_json::Value;

use meshd_lab::{Lab, interrupt};

use crate::DemoError;

/// The controller's host.
pub(crate) const CTL: &str = "ctl";
/// The hosts that run a node daemon.
pub(crate) const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// How long one `meshd` CLI call inside the lab may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the demo looks again while it waits for something to come up.
const POLL: Duration = Duration::from_millis(200);

/// The `meshd` executable run on the lab's hosts, as a user on each would run it.
#[derive(Debug)]
pub struct Meshd<'a> {
    pub lab: &'a mut Lab,
    pub exe: String,
}

impl Meshd<'_> {
    /// A host's state directory (a node's `--state`, the controller's `--data`).
    pub(crate) fn state(&self, role: &str) -> String {
        self.lab.dir().join(role).display().to_string()
    }

    /// `meshd controller <args> --data D` on the controller host; its stdout on success.
    pub(crate) fn ctl(&self, args: &[&str]) -> Result<String, DemoError> {
        let data = self.state(CTL);
        let mut argv = vec![self.exe.as_str(), "controller"];
        argv.extend(args);
        argv.extend(["--data", &data]);
        ok_stdout(&argv, self.lab.exec_timeout(CTL, &argv, CLI_TIMEOUT)?)
    }

    /// `meshd <args> --state S` on a node host.
    pub(crate) fn node_cli(&self, role: &str, args: &[&str]) -> Result<Output, DemoError> {
        let state = self.state(role);
        let mut argv = vec![self.exe.as_str()];
        argv.extend(args);
        argv.extend(["--state", &state]);
        Ok(self.lab.exec_timeout(role, &argv, CLI_TIMEOUT)?)
    }

    /// A node's `status --json`, or `None` while its daemon does not answer.
    pub(crate) fn status(&self, role: &str) -> Result<Option<Value>, DemoError> {
        let out = self.node_cli(role, &["status", "--json"])?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&out.stdout).ok())
    }

    /// Waits until every node's status for `nwid` is `want`; the last statuses.
    pub(crate) fn wait_network_status(
        &self,
        nwid: NetworkId,
        want: &str,
    ) -> Result<Vec<Value>, DemoError> {
        let mut last = Vec::new();
        let done = wait_for(Duration::from_secs(20), || {
            last.clear();
            for role in NODES {
                let s = self.status(role)?.unwrap_or(Value::Null);
                last.push(s);
            }
            Ok(last
                .iter()
                .all(|s| network_status(s, nwid) == Some(want))
                .then_some(()))
        })?;
        if done.is_none() {
            let seen: Vec<String> = NODES
                .iter()
                .zip(&last)
                .map(|(r, s)| format!("{r}={}", network_status(s, nwid).unwrap_or("?")))
                .collect();
            return Err(DemoError::Timeout(format!(
                "timed out waiting for {want} on every node (seen: {})",
                seen.join(", ")
            )));
        }
        Ok(last)
    }

    /// Pings each `(from, to)` at once (`count` echoes, 0.2 s apart): the average RTT in ms
    /// for each that answered.
    pub(crate) fn pings(
        &self,
        pairs: &[(&str, IpAddr)],
        count: u32,
    ) -> Result<Vec<Option<f64>>, DemoError> {
        let argvs: Vec<Vec<String>> = pairs
            .iter()
            .map(|(_, to)| {
                let mut argv = vec!["ping".to_owned()];
                if to.is_ipv6() {
                    argv.push("-6".to_owned());
                }
                argv.extend(
                    ["-n", "-c", &count.to_string(), "-W", "1", "-i", "0.2"].map(str::to_owned),
                );
                argv.push(to.to_string());
                argv
            })
            .collect();
        let argvs: Vec<Vec<&str>> = argvs
            .iter()
            .map(|a| a.iter().map(String::as_str).collect())
            .collect();
        let commands: Vec<(&str, &[&str])> = pairs
            .iter()
            .zip(&argvs)
            .map(|((from, _), a)| (*from, a.as_slice()))
            .collect();
        let outs = self.lab.exec_all(&commands, Duration::from_secs(10))?;
        Ok(outs
            .iter()
            .map(|o| {
                o.status
                    .success()
                    .then(|| avg_rtt(&String::from_utf8_lossy(&o.stdout)))
                    .flatten()
            })
            .collect())
    }
}

/// Polls `done` every [`POLL`] until it gives `Some` or `timeout` passes (`None`); an
/// interrupt is an error.
pub(crate) fn wait_for<T>(
    timeout: Duration,
    done: impl FnMut() -> Result<Option<T>, DemoError>,
) -> Result<Option<T>, DemoError> {
    interrupt::wait_for(timeout, POLL, done)
}

/// The stdout of a command that succeeded; the command and its stderr if it failed.
pub(crate) fn ok_stdout(argv: &[&str], out: Output) -> Result<String, DemoError> {
    if !out.status.success() {
        return Err(DemoError::Command {
            command: argv.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The network `nwid` in a node's `status --json`.
pub(crate) fn network(status: &Value, nwid: NetworkId) -> Option<&Value> {
    status["networks"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == nwid.to_string())
}

fn network_status(status: &Value, nwid: NetworkId) -> Option<&str> {
    network(status, nwid).and_then(|n| n["status"].as_str())
}

/// The average from ping's `rtt min/avg/max/mdev = a/b/c/d ms` line.
fn avg_rtt(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("min/avg/max"))?;
    line.split('=')
        .nth(1)?
        .trim()
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_rtt_from_ping() {
        let out = "3 packets transmitted, 3 received, 0% packet loss, time 402ms\n\
                   rtt min/avg/max/mdev = 0.101/0.250/0.400/0.122 ms\n";
        assert_eq!(avg_rtt(out), Some(0.25));
        assert_eq!(avg_rtt("100% packet loss"), None);
    }
}
