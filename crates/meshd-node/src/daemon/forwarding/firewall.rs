//! The firewall check: does a FORWARD chain with a DROP policy let mesh traffic through?
//! Parsers over `iptables -S` and `nft -j list ruleset` output are pure; running the tools
//! (with a timeout) is at the edge, in [`probe_firewall`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::Value;

use super::{BOTH, Needs, V4, V6};

/// How long one firewall tool may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The firewall state when neither tool is installed.
pub const NO_FIREWALL_TOOL: &str = "unknown (no iptables or nft)";

/// Whether a firewall chain lets mesh traffic through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshAccept {
    /// A rule accepts packets coming in on a mesh interface (`-i mesh…`).
    pub inbound: bool,
    /// A rule accepts packets going out on a mesh interface (`-o mesh…`).
    pub outbound: bool,
    /// A rule accepts everything (`-j ACCEPT` with no match).
    pub everything: bool,
}

impl MeshAccept {
    fn any(self) -> bool {
        self.inbound || self.outbound || self.everything
    }

    fn merge(&mut self, other: MeshAccept) {
        self.inbound |= other.inbound;
        self.outbound |= other.outbound;
        self.everything |= other.everything;
    }

    /// How a chain with a DROP policy fares, for the summary line.
    fn describe(self) -> &'static str {
        match (self.everything, self.inbound, self.outbound) {
            (true, _, _) => "a rule accepts everything",
            (_, true, true) => "accepts mesh-* in and out",
            (_, true, false) => "accepts mesh-* in",
            (_, false, true) => "accepts mesh-* out",
            (false, false, false) => "no rule for mesh-*",
        }
    }
}

/// What `iptables -S` (or `iptables -S FORWARD`) says about the FORWARD chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptablesForward {
    /// `-P FORWARD <policy>`; `None` when the output has no such line.
    pub policy: Option<String>,
    /// Docker's `DOCKER-USER` chain exists (or FORWARD jumps to it).
    pub docker_user: bool,
    /// Rules of FORWARD and of the chains it reaches by `-j`/`-g`.
    pub accepts: MeshAccept,
}

/// Splits an `iptables -S` line into words; `"..."` (with `\"`) is one word.
pub(super) fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => word.extend(chars.next()),
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// The value of option `short`/`long` in a rule's words, unless negated with `!`.
fn option<'a>(rule: &'a [String], short: &str, long: &str) -> Option<&'a str> {
    rule.iter().enumerate().find_map(|(i, w)| {
        let negated = i > 0 && rule[i - 1] == "!";
        (!negated && (w == short || w == long))
            .then(|| rule.get(i + 1).map(String::as_str))
            .flatten()
    })
}

fn is_mesh_interface(name: &str) -> bool {
    name.starts_with("mesh")
}

/// Parses the output of `iptables -S` or `ip6tables -S` (the whole filter table, or just
/// `-S FORWARD`).
pub fn parse_iptables(output: &str) -> IptablesForward {
    let mut policy = None;
    let mut chains: BTreeSet<String> = BTreeSet::new();
    let mut rules: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for line in output.lines() {
        let w = words(line);
        match w.first().map(String::as_str) {
            Some("-P") if w.get(1).is_some_and(|c| c == "FORWARD") => {
                policy = w.get(2).cloned();
            }
            Some("-N") => chains.extend(w.get(1).cloned()),
            Some("-A") if w.len() > 2 => {
                rules.entry(w[1].clone()).or_default().push(w[2..].to_vec());
            }
            _ => {}
        }
    }
    let mut accepts = MeshAccept::default();
    let mut docker_user = chains.contains("DOCKER-USER") || rules.contains_key("DOCKER-USER");
    let mut seen: BTreeSet<&str> = BTreeSet::from(["FORWARD"]);
    let mut queue: VecDeque<&str> = VecDeque::from(["FORWARD"]);
    while let Some(chain) = queue.pop_front() {
        for rule in rules.get(chain).into_iter().flatten() {
            let jump = option(rule, "-j", "--jump");
            let target = jump.or_else(|| option(rule, "-g", "--goto"));
            match target {
                Some("ACCEPT") if jump.is_some() => {
                    let inbound =
                        option(rule, "-i", "--in-interface").is_some_and(is_mesh_interface);
                    let outbound =
                        option(rule, "-o", "--out-interface").is_some_and(is_mesh_interface);
                    accepts.merge(MeshAccept {
                        inbound,
                        outbound,
                        everything: rule.len() == 2,
                    });
                }
                Some(t) => {
                    docker_user |= t == "DOCKER-USER";
                    if seen.insert(t) {
                        queue.push_back(t);
                    }
                }
                None => {}
            }
        }
    }
    IptablesForward {
        policy,
        docker_user,
        accepts,
    }
}

/// A base chain on the forward hook, from `nft -j list ruleset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftForwardChain {
    /// `ip`, `ip6` or `inet`.
    pub family: String,
    pub table: String,
    pub name: String,
    /// `accept` or `drop`.
    pub policy: String,
    /// Rules of the chain and of the chains it reaches by jump/goto.
    pub accepts: MeshAccept,
}

/// Whether an nft match's right side names a mesh interface (`"mesh*"`, or a set of names).
fn nft_names_mesh(right: &Value) -> bool {
    match right {
        Value::String(s) => is_mesh_interface(s),
        Value::Object(o) => o.get("set").is_some_and(nft_names_mesh),
        Value::Array(items) => items.iter().any(nft_names_mesh),
        _ => false,
    }
}

/// What one nft rule (its `expr` list) accepts, and the chain it jumps to.
fn nft_rule(expr: &[Value]) -> (MeshAccept, Option<String>) {
    let mut accept = false;
    let mut target = None;
    let mut inbound = false;
    let mut outbound = false;
    let mut only_counters = true;
    for e in expr {
        let Some(obj) = e.as_object() else { continue };
        if obj.contains_key("accept") {
            accept = true;
            continue;
        }
        if let Some(t) = obj
            .get("jump")
            .or_else(|| obj.get("goto"))
            .and_then(|j| j.get("target"))
            .and_then(Value::as_str)
        {
            target = Some(t.to_owned());
            continue;
        }
        if obj.contains_key("counter") {
            continue;
        }
        only_counters = false;
        let Some(m) = obj.get("match") else { continue };
        if !matches!(m.get("op").and_then(Value::as_str), Some("==" | "in")) {
            continue;
        }
        let key = m
            .get("left")
            .and_then(|l| l.get("meta"))
            .and_then(|meta| meta.get("key"))
            .and_then(Value::as_str);
        let mesh = m.get("right").is_some_and(nft_names_mesh);
        match key {
            Some("iifname") if mesh => inbound = true,
            Some("oifname") if mesh => outbound = true,
            _ => {}
        }
    }
    let accepts = if accept {
        MeshAccept {
            inbound,
            outbound,
            everything: only_counters,
        }
    } else {
        MeshAccept::default()
    };
    (accepts, target)
}

/// Parses `nft -j list ruleset`: the base chains on the forward hook of the `ip`, `ip6` and
/// `inet` families.
pub fn parse_nft_ruleset(json: &str) -> Result<Vec<NftForwardChain>, String> {
    let doc: Value =
        serde_json::from_str(json).map_err(|e| format!("unexpected `nft -j` output: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("unexpected `nft -j` output: no \"nftables\" array")?;
    type Key = (String, String, String);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut bases: Vec<(Key, String)> = Vec::new();
    let mut rules: BTreeMap<Key, Vec<(MeshAccept, Option<String>)>> = BTreeMap::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            let family = text(c, "family");
            if c.get("hook").and_then(Value::as_str) == Some("forward")
                && matches!(family.as_str(), "ip" | "ip6" | "inet")
            {
                let policy = c
                    .get("policy")
                    .and_then(Value::as_str)
                    .unwrap_or("accept")
                    .to_owned();
                bases.push(((family, text(c, "table"), text(c, "name")), policy));
            }
        } else if let Some(r) = item.get("rule") {
            let key = (text(r, "family"), text(r, "table"), text(r, "chain"));
            let expr = r.get("expr").and_then(Value::as_array);
            rules
                .entry(key)
                .or_default()
                .push(nft_rule(expr.map_or(&[][..], Vec::as_slice)));
        }
    }
    Ok(bases
        .into_iter()
        .map(|(key, policy)| {
            let mut accepts = MeshAccept::default();
            let mut seen = BTreeSet::from([key.2.clone()]);
            let mut queue = VecDeque::from([key.2.clone()]);
            while let Some(chain) = queue.pop_front() {
                let k = (key.0.clone(), key.1.clone(), chain);
                for (a, target) in rules.get(&k).into_iter().flatten() {
                    accepts.merge(*a);
                    if let Some(t) = target
                        && seen.insert(t.clone())
                    {
                        queue.push_back(t.clone());
                    }
                }
            }
            let (family, table, name) = key;
            NftForwardChain {
                family,
                table,
                name,
                policy,
                accepts,
            }
        })
        .collect())
}

/// A firewall problem, for the families it concerns: what is wrong, and the rules that fix
/// it ([`FirewallProblem::text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallProblem {
    pub family: Needs,
    pub message: String,
    pub fix: Fix,
}

/// Where the rules that open the mesh go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// `iptables`/`ip6tables`, into this chain.
    Iptables { tool: String, chain: String },
    /// This nft chain (`family table name`).
    Nft { chain: String },
}

impl FirewallProblem {
    /// The problem and its fix. Traffic from the mesh is opened only towards `owned` (this
    /// host's container subnets and the routes it is the gateway of), so that the rule does
    /// not make the host a router for anything else; with none known, towards anything.
    pub fn text(&self, owned: &[IpNet]) -> String {
        let v6 = |n: &&IpNet| matches!(n, IpNet::V6(_));
        let rules: Vec<String> = match &self.fix {
            Fix::Iptables { tool, chain } => {
                let mine: Vec<&IpNet> = owned
                    .iter()
                    .filter(|n| v6(n) == (tool == "ip6tables"))
                    .collect();
                let inbound: Vec<String> = if mine.is_empty() {
                    vec![format!("{tool} -I {chain} -i mesh+ -j ACCEPT")]
                } else {
                    mine.iter()
                        .map(|n| format!("{tool} -I {chain} -i mesh+ -d {n} -j ACCEPT"))
                        .collect()
                };
                inbound
                    .into_iter()
                    .chain([format!("{tool} -I {chain} -o mesh+ -j ACCEPT")])
                    .collect()
            }
            Fix::Nft { chain } => {
                let inbound: Vec<String> = if owned.is_empty() {
                    vec![format!("nft insert rule {chain} iifname \"mesh*\" accept")]
                } else {
                    owned
                        .iter()
                        .map(|n| {
                            let family = if v6(&n) { "ip6" } else { "ip" };
                            format!(
                                "nft insert rule {chain} iifname \"mesh*\" {family} daddr {n} accept"
                            )
                        })
                        .collect()
                };
                inbound
                    .into_iter()
                    .chain([format!("nft insert rule {chain} oifname \"mesh*\" accept")])
                    .collect()
            }
        };
        format!("{}; run `{}`", self.message, rules.join("; "))
    }
}

/// The firewall's state: the summary line and its problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    pub summary: String,
    pub problems: Vec<FirewallProblem>,
}

fn unreachable_over(family: Needs) -> &'static str {
    match (family.ipv4, family.ipv6) {
        (true, true) => "IPv4 and IPv6",
        (false, true) => "IPv6",
        _ => "IPv4",
    }
}

/// The summary part and problem for `tool` (`iptables` or `ip6tables`).
pub fn assess_iptables(tool: &str, fw: &IptablesForward) -> (String, Option<FirewallProblem>) {
    let family = if tool == "ip6tables" { V6 } else { V4 };
    match fw.policy.as_deref() {
        None => (format!("{tool}: no FORWARD policy in `{tool} -S`"), None),
        Some("DROP") => {
            let line = format!("{tool} FORWARD policy DROP, {}", fw.accepts.describe());
            if fw.accepts.any() {
                return (line, None);
            }
            let chain = if fw.docker_user {
                "DOCKER-USER"
            } else {
                "FORWARD"
            };
            let message = format!(
                "{tool} FORWARD policy is DROP and no rule accepts the mesh interfaces \
                 (mesh-*): containers behind this host are unreachable over {} from other \
                 hosts",
                unreachable_over(family)
            );
            let fix = Fix::Iptables {
                tool: tool.to_owned(),
                chain: chain.to_owned(),
            };
            (
                line,
                Some(FirewallProblem {
                    family,
                    message,
                    fix,
                }),
            )
        }
        Some(policy) => (format!("{tool} FORWARD policy {policy}"), None),
    }
}

/// The summary parts and problems for nft's forward chains. `skip_v4`/`skip_v6`: iptables
/// (ip6tables) already reported, so the `ip filter FORWARD` (`ip6 filter FORWARD`) chain
/// iptables-nft keeps in nft is the same one and is left out.
pub fn assess_nft(
    chains: &[NftForwardChain],
    skip_v4: bool,
    skip_v6: bool,
) -> (Vec<String>, Vec<FirewallProblem>) {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for c in chains {
        let iptables_compat = c.table == "filter" && c.name == "FORWARD";
        if iptables_compat && ((c.family == "ip" && skip_v4) || (c.family == "ip6" && skip_v6)) {
            continue;
        }
        let family = match c.family.as_str() {
            "ip" => V4,
            "ip6" => V6,
            _ => BOTH,
        };
        let chain = format!("{} {} {}", c.family, c.table, c.name);
        if c.policy != "drop" {
            lines.push(format!("nft {chain} policy {}", c.policy));
            continue;
        }
        lines.push(format!("nft {chain} policy drop, {}", c.accepts.describe()));
        if !c.accepts.any() {
            problems.push(FirewallProblem {
                family,
                message: format!(
                    "nftables chain {chain} (hook forward) has policy drop and no rule accepts \
                     the mesh interfaces (mesh-*): containers behind this host are unreachable \
                     over {} from other hosts",
                    unreachable_over(family)
                ),
                fix: Fix::Nft {
                    chain: chain.clone(),
                },
            });
        }
    }
    (lines, problems)
}

/// An executable named `name` on `PATH`, or in the sbin directories a non-root `PATH`
/// often lacks.
pub(super) fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `program args` with a timeout; its stdout, or a one-line error.
pub(super) fn run_tool(program: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let shown = format!(
        "`{} {}`",
        program.file_name().unwrap_or_default().to_string_lossy(),
        args.join(" ")
    );
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    };
    let out = stdout.join().unwrap_or_default();
    if status.success() {
        return Ok(out);
    }
    let err = stderr.join().unwrap_or_default();
    let reason = err
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("no message")
        .to_owned();
    Err(format!("{shown} failed ({status}): {reason}"))
}

/// Checks the firewall with the tools installed here (`iptables`, `ip6tables`, `nft`).
pub fn probe_firewall() -> Firewall {
    let tools = [
        ("iptables", find_tool("iptables")),
        ("ip6tables", find_tool("ip6tables")),
    ];
    let nft = find_tool("nft");
    if tools.iter().all(|(_, p)| p.is_none()) && nft.is_none() {
        return Firewall {
            summary: NO_FIREWALL_TOOL.to_owned(),
            problems: Vec::new(),
        };
    }
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut listed = [false, false];
    for (i, (tool, path)) in tools.iter().enumerate() {
        let Some(path) = path else { continue };
        match run_tool(path, &["-S"], COMMAND_TIMEOUT) {
            Ok(out) => {
                let fw = parse_iptables(&out);
                listed[i] = fw.policy.is_some();
                let (line, problem) = assess_iptables(tool, &fw);
                lines.push(line);
                problems.extend(problem);
            }
            Err(e) => lines.push(format!("{tool}: {e}")),
        }
    }
    if let Some(nft) = nft {
        match run_tool(&nft, &["-j", "list", "ruleset"], COMMAND_TIMEOUT)
            .and_then(|out| parse_nft_ruleset(&out))
        {
            Ok(chains) => {
                let (nft_lines, nft_problems) = assess_nft(&chains, listed[0], listed[1]);
                if nft_lines.is_empty() && lines.is_empty() {
                    lines.push("nft: no forward chain".to_owned());
                }
                lines.extend(nft_lines);
                problems.extend(nft_problems);
            }
            Err(e) => lines.push(format!("nft: {e}")),
        }
    }
    Firewall {
        summary: lines.join("; "),
        problems,
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// `iptables -S` on a Docker 28 host (filter table).
    pub(in crate::daemon::forwarding) const DOCKER_IPTABLES: &str = "\
-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-N DOCKER
-N DOCKER-BRIDGE
-N DOCKER-CT
-N DOCKER-FORWARD
-N DOCKER-ISOLATION-STAGE-1
-N DOCKER-ISOLATION-STAGE-2
-N DOCKER-USER
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER-BRIDGE -o docker0 -j DOCKER
-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-USER -j RETURN
";

    #[test]
    fn docker_forward_policy_without_a_mesh_rule_is_a_problem() {
        for output in [
            DOCKER_IPTABLES,
            // `iptables -S FORWARD` alone.
            "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n",
        ] {
            let fw = parse_iptables(output);
            assert_eq!(
                fw,
                IptablesForward {
                    policy: Some("DROP".into()),
                    docker_user: true,
                    accepts: MeshAccept::default(),
                }
            );
            let (line, problem) = assess_iptables("iptables", &fw);
            assert_eq!(line, "iptables FORWARD policy DROP, no rule for mesh-*");
            let problem = problem.unwrap();
            assert_eq!(problem.family, V4);
            assert!(
                problem.text(&[]).ends_with(
                    "run `iptables -I DOCKER-USER -i mesh+ -j ACCEPT; \
                     iptables -I DOCKER-USER -o mesh+ -j ACCEPT`"
                ),
                "{}",
                problem.text(&[])
            );
            assert!(problem.message.contains("over IPv4"), "{}", problem.message);
        }
        // Without Docker: the fix goes into FORWARD.
        let fw = parse_iptables("-P FORWARD DROP\n-A FORWARD -i eth0 -o eth1 -j ACCEPT\n");
        assert!(!fw.docker_user);
        let (_, problem) = assess_iptables("ip6tables", &fw);
        let problem = problem.unwrap();
        assert_eq!(problem.family, V6);
        assert!(
            problem.text(&[]).contains(
                "`ip6tables -I FORWARD -i mesh+ -j ACCEPT; ip6tables -I FORWARD -o mesh+ -j ACCEPT`"
            ),
            "{}",
            problem.text(&[])
        );
    }

    #[test]
    fn the_fix_opens_the_mesh_only_towards_what_the_host_owns() {
        let owned: Vec<IpNet> = ["172.28.3.0/24", "192.168.77.0/24", "fc9c:1:2:3:4::/80"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let (_, v4) = assess_iptables("iptables", &parse_iptables(DOCKER_IPTABLES));
        assert_eq!(
            v4.unwrap().text(&owned).split("; run ").nth(1).unwrap(),
            "`iptables -I DOCKER-USER -i mesh+ -d 172.28.3.0/24 -j ACCEPT; \
             iptables -I DOCKER-USER -i mesh+ -d 192.168.77.0/24 -j ACCEPT; \
             iptables -I DOCKER-USER -o mesh+ -j ACCEPT`"
        );
        let (_, v6) = assess_iptables("ip6tables", &parse_iptables("-P FORWARD DROP\n"));
        assert!(v6.unwrap().text(&owned).ends_with(
            "`ip6tables -I FORWARD -i mesh+ -d fc9c:1:2:3:4::/80 -j ACCEPT; \
                 ip6tables -I FORWARD -o mesh+ -j ACCEPT`"
        ));
        let nft = FirewallProblem {
            family: BOTH,
            message: "drop".into(),
            fix: Fix::Nft {
                chain: "inet filter forward".into(),
            },
        };
        let text = nft.text(&owned[1..]);
        assert_eq!(
            text,
            "drop; run `nft insert rule inet filter forward iifname \"mesh*\" ip daddr \
             192.168.77.0/24 accept; nft insert rule inet filter forward iifname \"mesh*\" \
             ip6 daddr fc9c:1:2:3:4::/80 accept; nft insert rule inet filter forward oifname \
             \"mesh*\" accept`"
        );
    }

    #[test]
    fn a_mesh_rule_in_forward_or_docker_user_lets_traffic_through() {
        // The rule `meshd docker-config` prints, in DOCKER-USER.
        let with_user_rule = DOCKER_IPTABLES.replace(
            "-A DOCKER-USER -j RETURN",
            "-A DOCKER-USER -d 172.28.3.0/24 -i mesh-8056c2e21c -j ACCEPT\n-A DOCKER-USER -j RETURN",
        );
        let fw = parse_iptables(&with_user_rule);
        assert_eq!(
            fw.accepts,
            MeshAccept {
                inbound: true,
                outbound: false,
                everything: false
            }
        );
        let (line, problem) = assess_iptables("iptables", &fw);
        assert_eq!(line, "iptables FORWARD policy DROP, accepts mesh-* in");
        assert_eq!(problem, None);

        let both = format!(
            "-A FORWARD -i mesh+ -j ACCEPT\n-A FORWARD -o mesh+ -m comment --comment \"meshd -i x\" -j ACCEPT\n{DOCKER_IPTABLES}"
        );
        let (line, problem) = assess_iptables("iptables", &parse_iptables(&both));
        assert_eq!(
            line,
            "iptables FORWARD policy DROP, accepts mesh-* in and out"
        );
        assert_eq!(problem, None);

        // Negated, dropped, or in a chain FORWARD never reaches: still a problem.
        let not_mesh = "-P FORWARD DROP\n-N UNUSED\n-A FORWARD ! -i mesh+ -j ACCEPT\n\
                        -A FORWARD -i mesh+ -j DROP\n-A UNUSED -i mesh+ -j ACCEPT\n";
        let fw = parse_iptables(not_mesh);
        assert_eq!(fw.accepts, MeshAccept::default());
        assert!(assess_iptables("iptables", &fw).1.is_some());

        // Everything accepted, or policy ACCEPT: fine.
        let fw = parse_iptables("-P FORWARD DROP\n-A FORWARD -j ACCEPT\n");
        assert!(fw.accepts.everything);
        assert_eq!(assess_iptables("iptables", &fw).1, None);
        let (line, problem) = assess_iptables("iptables", &parse_iptables("-P FORWARD ACCEPT\n"));
        assert_eq!(
            (line.as_str(), problem),
            ("iptables FORWARD policy ACCEPT", None)
        );
        // Output without a policy (an error message, say): no verdict.
        let (line, problem) = assess_iptables("iptables", &parse_iptables(""));
        assert_eq!(line, "iptables: no FORWARD policy in `iptables -S`");
        assert_eq!(problem, None);
    }

    #[test]
    fn splits_words_with_quotes() {
        assert_eq!(
            words(r#"-A X -m comment --comment "a \"b\" c" -j ACCEPT"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(words("  "), Vec::<String>::new());
    }

    /// `nft -j list ruleset` on a host with iptables-nft (Docker) and Debian's
    /// `/etc/nftables.conf` made strict (`policy drop` on forward).
    const NFT_RULESET: &str = r#"{"nftables": [
{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "filter", "handle": 1}},
{"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
{"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 5}},
{"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 7, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "DOCKER-USER"}}]}},
{"rule": {"family": "ip", "table": "filter", "chain": "DOCKER-USER", "handle": 9, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"return": null}]}},
{"table": {"family": "inet", "name": "filter", "handle": 3}},
{"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
{"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
{"chain": {"family": "inet", "table": "filter", "name": "output", "handle": 3, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}},
{"rule": {"family": "inet", "table": "filter", "chain": "forward", "handle": 4, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
{"table": {"family": "bridge", "name": "filter", "handle": 4}},
{"chain": {"family": "bridge", "table": "filter", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": -200, "policy": "drop"}}
]}"#;

    #[test]
    fn nft_forward_chains_with_policy_drop() {
        let chains = parse_nft_ruleset(NFT_RULESET).unwrap();
        assert_eq!(
            chains,
            vec![
                NftForwardChain {
                    family: "ip".into(),
                    table: "filter".into(),
                    name: "FORWARD".into(),
                    policy: "drop".into(),
                    accepts: MeshAccept::default(),
                },
                NftForwardChain {
                    family: "inet".into(),
                    table: "filter".into(),
                    name: "forward".into(),
                    policy: "drop".into(),
                    accepts: MeshAccept::default(),
                },
            ]
        );
        // iptables already reported the iptables-nft chain: only the native one is left.
        let (lines, problems) = assess_nft(&chains, true, true);
        assert_eq!(
            lines,
            vec!["nft inet filter forward policy drop, no rule for mesh-*".to_owned()]
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].family, BOTH);
        assert!(
            problems[0].text(&[]).ends_with(
                "run `nft insert rule inet filter forward iifname \"mesh*\" accept; \
                 nft insert rule inet filter forward oifname \"mesh*\" accept`"
            ),
            "{}",
            problems[0].text(&[])
        );
        // Without iptables, both are reported.
        let (lines, problems) = assess_nft(&chains, false, false);
        assert_eq!(lines.len(), 2);
        assert_eq!(problems[0].family, V4);
    }

    #[test]
    fn nft_mesh_rules_count_through_jumps_and_sets() {
        let mesh_in =
            r#"{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "mesh*"}}"#;
        let mesh_out_set = r#"{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": {"set": ["eth0", "mesh-8056c2e21c"]}}}"#;
        // The inet forward chain gets a second rule; DOCKER-USER accepts mesh* instead of
        // returning.
        let ruleset = NFT_RULESET
            .replace(
                r#"{"accept": null}]}},"#,
                &format!(r#"{{"accept": null}}]}}}},
{{"rule": {{"family": "inet", "table": "filter", "chain": "forward", "handle": 5, "expr": [{mesh_out_set}, {{"accept": null}}]}}}},"#),
            )
            .replace(
                r#"{"return": null}"#,
                &format!(r#"{mesh_in}, {{"counter": null}}, {{"accept": null}}"#),
            );
        let chains = parse_nft_ruleset(&ruleset).unwrap();
        assert_eq!(
            chains[0].accepts,
            MeshAccept {
                inbound: true,
                outbound: false,
                everything: false
            },
            "through the jump to DOCKER-USER"
        );
        assert_eq!(
            chains[1].accepts,
            MeshAccept {
                inbound: false,
                outbound: true,
                everything: false
            }
        );
        let (lines, problems) = assess_nft(&chains, false, false);
        assert_eq!(
            lines,
            vec![
                "nft ip filter FORWARD policy drop, accepts mesh-* in".to_owned(),
                "nft inet filter forward policy drop, accepts mesh-* out".to_owned(),
            ]
        );
        assert!(problems.is_empty());

        // A bare accept (with a counter) accepts everything; a negated match is no mesh rule.
        let (all, _) = nft_rule(
            &serde_json::from_str::<Vec<Value>>(
                r#"[{"counter": {"packets": 1, "bytes": 2}}, {"accept": null}]"#,
            )
            .unwrap(),
        );
        assert!(all.everything);
        let (neg, _) = nft_rule(&serde_json::from_str::<Vec<Value>>(
            r#"[{"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "mesh*"}}, {"accept": null}]"#,
        )
        .unwrap());
        assert_eq!(neg, MeshAccept::default());
    }

    #[test]
    fn nft_empty_or_bad_output() {
        let empty = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}]}"#;
        assert_eq!(parse_nft_ruleset(empty).unwrap(), vec![]);
        assert!(parse_nft_ruleset("table inet filter {").is_err());
        assert!(parse_nft_ruleset("{}").is_err());
    }

    #[test]
    fn a_tool_that_hangs_is_cut_off() {
        let started = Instant::now();
        let err =
            run_tool(Path::new("/bin/sleep"), &["10"], Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = run_tool(
            Path::new("/bin/sh"),
            &["-c", "echo '# note' >&2; echo boom >&2; exit 3"],
            COMMAND_TIMEOUT,
        )
        .unwrap_err();
        assert!(err.ends_with(": boom"), "{err}");
        assert_eq!(
            run_tool(Path::new("/bin/echo"), &["hi"], COMMAND_TIMEOUT).unwrap(),
            "hi\n"
        );
    }
}
