//! Controller replicas on the hosts of a [`Mesh`]: initialized, joined and added the way an
//! operator does it, then started, stopped and inspected through their own admin APIs. Used
//! by the tests that need a replicated controller (`ha_e2e`, `nat_e2e`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use meshd_lab::Proc;
use meshd_proto::NetworkId;
use serde_json::Value;

use super::{API_PORT, CHANNEL_PORT, CTL, MESHD, Mesh, revision, tail};
use crate::common::ok_stdout;

/// One controller replica on its lab host.
#[derive(Debug)]
pub struct Replica {
    pub role: &'static str,
    pub data: PathBuf,
    pub log: PathBuf,
    pub proc: Option<Proc>,
}

/// Controller replicas on hosts of a [`Mesh`], the first on its controller host [`CTL`].
pub struct Cluster {
    pub m: Mesh,
    pub replicas: Vec<Replica>,
}

impl Cluster {
    /// Replicas on `roles` of `m` (the first must be [`CTL`]); none runs yet.
    pub fn new(m: Mesh, roles: &[&'static str]) -> Self {
        assert_eq!(
            roles.first(),
            Some(&CTL),
            "the first replica is on the controller host"
        );
        let dir = m.ctl_data.parent().expect("the mesh's temp dir").to_owned();
        let replicas = roles
            .iter()
            .map(|role| Replica {
                role,
                data: dir.join(format!("replica-{role}")),
                log: dir.join(format!("replica-{role}.log")),
                proc: None,
            })
            .collect();
        Cluster { m, replicas }
    }

    /// Starts every replica as an operator would (init, run; init --join, run, the
    /// `replica add` that init printed) and waits until all are healthy with no lag.
    pub fn start_all(&mut self) {
        let c = self;
        // Three replicas: init, init --join (which prints the `replica add` to run), add.
        let first = c.init(0, None);
        c.run(0);
        let token = std::fs::read_to_string(c.replicas[0].data.join("api.token"))
            .expect("the first replica's token")
            .trim()
            .to_owned();
        // The API listens on a lab address, so it speaks HTTPS: pin what init printed.
        let fingerprint = first
            .lines()
            .find_map(|l| l.trim().strip_prefix("admin API certificate:"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("init prints the API certificate:\n{first}"))
            .to_owned();
        for r in 1..c.replicas.len() {
            let printed = c.init(r, Some((&c.api_url(0), &token, &fingerprint)));
            let add: Vec<String> = printed
                .lines()
                .find_map(|l| {
                    l.split_once("meshd controller replica add ")
                        .map(|(_, a)| a)
                })
                .unwrap_or_else(|| panic!("init --join prints the replica add command:\n{printed}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            c.run(r);
            let mut argv = vec!["replica", "add"];
            argv.extend(
                add.iter()
                    .map(String::as_str)
                    .filter(|a| !a.starts_with('\\')),
            );
            // The printed command names the API with --api; against replica 0's own data dir
            // here, so drop --api/--token if printed and let --data supply them.
            let argv: Vec<&str> = strip_flags(&argv, &["--api", "--token", "--fingerprint"]);
            let out = c.cli(0, &argv);
            ok_stdout(&out);
        }
        let healthy = meshd_lab::interrupt::wait_until(Duration::from_secs(20), || {
            let list = c.list(0);
            list["leader"].is_u64()
                && list["replicas"].as_array().is_some_and(|rs| {
                    rs.len() == 3 && rs.iter().all(|r| r["healthy"] == true && r["lag"] == 0)
                })
        });
        assert!(
            healthy,
            "3 healthy replicas:\n{:#}\n{}",
            c.list(0),
            c.diagnostics()
        );
    }

    pub fn listen(&self, r: usize) -> String {
        format!("{}:{CHANNEL_PORT}", self.m.lab.ip(self.replicas[r].role))
    }

    pub fn api_url(&self, r: usize) -> String {
        format!(
            "https://{}:{API_PORT}",
            self.m.lab.ip(self.replicas[r].role)
        )
    }

    /// `meshd controller <args> --data D` on replica `r`'s host, against its own API.
    pub fn cli(&self, r: usize, args: &[&str]) -> Output {
        let rep = &self.replicas[r];
        let mut argv = vec![MESHD, "controller"];
        argv.extend(args);
        argv.extend(["--data", rep.data.to_str().expect("UTF-8 path")]);
        self.m
            .lab
            .exec_timeout(rep.role, &argv, Duration::from_secs(15))
            .expect("lab")
    }

    /// `join`: the URL, token and certificate fingerprint of a replica to join.
    pub fn init(&self, r: usize, join: Option<(&str, &str, &str)>) -> String {
        let rep = &self.replicas[r];
        let (listen, api) = (
            self.listen(r),
            format!("{}:{API_PORT}", self.m.lab.ip(rep.role)),
        );
        let data = rep.data.to_str().expect("UTF-8 path");
        let mut argv = vec![
            MESHD,
            "controller",
            "init",
            "--data",
            data,
            "--listen",
            &listen,
            "--api-listen",
            &api,
        ];
        if let Some((url, token, fingerprint)) = join {
            argv.extend([
                "--join",
                url,
                "--token",
                token,
                "--fingerprint",
                fingerprint,
            ]);
        }
        ok_stdout(&self.m.lab.exec(rep.role, &argv).expect("lab"))
    }

    pub fn run(&mut self, r: usize) {
        let rep = &self.replicas[r];
        let (role, log) = (rep.role, rep.log.clone());
        let data = rep.data.to_str().expect("UTF-8 path").to_owned();
        let proc = self
            .m
            .lab
            .spawn(
                role,
                &[
                    "env",
                    "RUST_LOG=info,openraft=warn",
                    MESHD,
                    "controller",
                    "run",
                    "--data",
                    &data,
                ],
                &log,
            )
            .expect("lab");
        self.replicas[r].proc = Some(proc);
        let up = meshd_lab::interrupt::wait_until(Duration::from_secs(30), || {
            self.cli(r, &["replica", "list", "--json"]).status.success()
                || self.m.lab.exited(proc).is_some()
        });
        assert!(
            up && self.m.lab.exited(proc).is_none(),
            "{role}: the replica did not come up:\n{}",
            tail(&log)
        );
    }

    pub fn list(&self, r: usize) -> Value {
        serde_json::from_str(&ok_stdout(&self.cli(r, &["replica", "list", "--json"])))
            .expect("replica list --json prints JSON")
    }

    /// The replica that leads, as replica `via` sees it.
    pub fn leader(&self, via: usize) -> Option<usize> {
        let list = self.list(via);
        let leader = list["leader"].as_u64()?;
        let address = list["replicas"]
            .as_array()?
            .iter()
            .find(|r| r["id"].as_u64() == Some(leader))?["address"]
            .as_str()?
            .to_owned();
        (0..self.replicas.len()).find(|&r| self.listen(r) == address)
    }

    /// Everything replica `r` holds, as its own admin API reads it: the networks, and each
    /// network's members and routes.
    pub fn dump(&self, r: usize) -> Option<Value> {
        let out = self.cli(r, &["network", "list", "--json"]);
        if !out.status.success() {
            return None;
        }
        let networks: Value = serde_json::from_slice(&out.stdout).ok()?;
        let mut dump = Vec::new();
        for n in networks.as_array()? {
            let id = n["id"].as_str()?;
            let show = self.cli(r, &["network", "show", id, "--json"]);
            let members = self.cli(r, &["member", "list", id, "--json"]);
            if !show.status.success() || !members.status.success() {
                return None;
            }
            let mut members: Value = serde_json::from_slice(&members.stdout).ok()?;
            // When each member was last seen is per replica (the replica it talks to).
            for m in members.as_array_mut()? {
                if let Some(m) = m.as_object_mut() {
                    m.remove("last_seen_ms");
                    m.remove("physical_endpoint");
                    m.remove("local_endpoints");
                }
            }
            dump.push(serde_json::json!({
                "network": serde_json::from_slice::<Value>(&show.stdout).ok()?,
                "members": members,
            }));
        }
        Some(Value::Array(dump))
    }

    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for rep in &self.replicas {
            out.push_str(&format!("--- {} log (tail)\n{}", rep.role, tail(&rep.log)));
        }
        out.push_str(&self.m.diagnostics());
        out
    }

    /// Waits until every node in `nodes` runs on `nwid` at `revision` or newer.
    pub fn wait_revision(&self, nodes: &[usize], nwid: NetworkId, at_least: u64, within: Duration) {
        let mut behind = Vec::new();
        let ok = meshd_lab::interrupt::wait_until(within, || {
            behind = nodes
                .iter()
                .filter(|&&i| revision(&self.m.status(i), nwid).is_none_or(|r| r < at_least))
                .map(|&i| self.m.nodes[i].role)
                .collect();
            behind.is_empty()
        });
        assert!(
            ok,
            "{behind:?} did not reach revision {at_least} within {within:?}\n{}",
            self.diagnostics()
        );
    }

    /// Pings every `(from, to)` over IPv4 until all answer (sessions to a new peer come up
    /// with the first packet) or `within` passes; the ones that never answered.
    pub fn pings_ok(&self, pairs: &[(usize, usize)]) -> Vec<String> {
        let targets: Vec<(usize, IpAddr)> = pairs
            .iter()
            .map(|&(a, b)| (a, IpAddr::V4(self.m.nodes[b].addrs().v4)))
            .collect();
        let mut failed = Vec::new();
        meshd_lab::interrupt::wait_until(Duration::from_secs(10), || {
            failed = self.m.pings(&targets, 1, 1);
            failed.is_empty()
        });
        failed
    }
}

/// `argv` without the given flags and their values.
fn strip_flags<'a>(argv: &[&'a str], flags: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in argv {
        if skip {
            skip = false;
        } else if flags.contains(a) {
            skip = true;
        } else if !flags.iter().any(|f| a.starts_with(&format!("{f}="))) {
            out.push(*a);
        }
    }
    out
}
