//! Human output of the admin commands: aligned tables and `key  value` blocks. Pure
//! functions of the API's views (and the current time), so they are tested without a
//! controller.

use meshd_io::text::table;

use crate::api::views::{MemberView, NetworkView, PathCounts, RouteView};
use crate::replica::{ClusterView, ReplicaRole};

/// Printed for an absent value.
const NONE: &str = "-";

/// `network list`.
pub fn network_table(networks: &[NetworkView]) -> String {
    if networks.is_empty() {
        return "no networks; create one with `meshd controller network create --name NAME`\n"
            .to_owned();
    }
    table(
        &[
            "NETWORK ID",
            "NAME",
            "MEMBERS",
            "AUTHORIZED",
            "IPV4 POOLS",
            "CONTAINER POOL",
            "ROUTES",
        ],
        networks
            .iter()
            .map(|n| {
                vec![
                    n.id.to_string(),
                    or_none(&n.name),
                    n.members.total.to_string(),
                    n.members.authorized.to_string(),
                    join(&n.v4_pools),
                    n.container_pool.to_string(),
                    n.routes.len().to_string(),
                ]
            })
            .collect(),
    )
}

/// `network show`.
pub fn network_details(n: &NetworkView) -> String {
    let on_off = |range: Option<String>, per_member: &str| {
        range.map_or_else(|| "off".to_owned(), |r| format!("{r}, {per_member}"))
    };
    let mut rows = vec![
        ("network", n.id.to_string()),
        ("name", or_none(&n.name)),
        ("revision", n.revision.to_string()),
        ("mtu", n.mtu.to_string()),
        ("ipv4 pools", join(&n.v4_pools)),
        (
            "container pool",
            format!("{}, a /{} per member", n.container_pool, n.container_prefix),
        ),
        (
            "6plane",
            on_off(n.sixplane_range.map(|r| r.to_string()), "a /80 per member"),
        ),
        (
            "rfc4193",
            on_off(
                n.rfc4193_range.map(|r| r.to_string()),
                "an address per member",
            ),
        ),
        ("ipv6 egress", n.ipv6_egress.to_string()),
        (
            "members",
            format!("{} ({} authorized)", n.members.total, n.members.authorized),
        ),
        ("created", utc(n.created_ms)),
    ];
    if n.routes.is_empty() {
        rows.push(("routes", "none".to_owned()));
    }
    for (i, r) in n.routes.iter().enumerate() {
        rows.push((if i == 0 { "routes" } else { "" }, route_text(r)));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

/// `member list`.
pub fn member_table(members: &[MemberView], now_ms: u64) -> String {
    if members.is_empty() {
        return "no members yet; a node appears here once it runs `meshd join NWID`\n".to_owned();
    }
    table(
        &[
            "NODE ID",
            "KEY",
            "NAME",
            "AUTHORIZED",
            "IPV4",
            "CONTAINER SUBNET",
            "6PLANE /80",
            "PATHS",
            "LAST SEEN",
        ],
        members
            .iter()
            .map(|m| {
                vec![
                    m.node_id.to_string(),
                    m.key_fingerprint.clone(),
                    or_none(&m.name),
                    if m.authorized { "yes" } else { "no" }.to_owned(),
                    join(&m.ipv4),
                    opt(m.container_subnet),
                    opt(m.sixplane_subnet),
                    m.paths.map_or_else(|| "-".to_owned(), |p| paths_text(&p)),
                    if m.online {
                        "online".to_owned()
                    } else {
                        m.last_report_ms
                            .max(m.last_seen_ms)
                            .map_or_else(|| "never".to_owned(), |t| ago(now_ms, t))
                    },
                ]
            })
            .collect(),
    )
}

/// `2 direct, 1 relay`: how a member reaches its peers; `no peers` when it has none.
fn paths_text(p: &PathCounts) -> String {
    let parts: Vec<String> = [(p.direct, "direct"), (p.relay, "relay"), (p.none, "none")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if parts.is_empty() {
        "no peers".to_owned()
    } else {
        parts.join(", ")
    }
}

/// One line about a member after `authorize`.
pub fn authorized(network: &str, m: &MemberView) -> String {
    let mut parts = vec![format!("IPv4 {}", join(&m.ipv4))];
    if let Some(s) = m.container_subnet {
        parts.push(format!("containers {s}"));
    }
    if let Some(s) = m.sixplane_subnet {
        parts.push(format!("6PLANE {s}"));
    }
    format!(
        "authorized {} (key {}) in network {network}: {}\n",
        m.node_id,
        m.key_fingerprint,
        parts.join(", ")
    )
}

/// `replica list` (and after `replica add`/`remove`): a summary line, then one row a replica.
pub fn replica_table(view: &ClusterView) -> String {
    let mut out = match (view.leader, &view.note) {
        (Some(leader), _) => format!(
            "leader: replica {leader}, term {}, last log index {}\n",
            view.term,
            opt(view.last_log_index)
        ),
        (None, Some(note)) => format!(
            "leader: unknown ({note}); as replica {} sees it:\n",
            view.reported_by
        ),
        (None, None) => format!(
            "leader: unknown; as replica {} sees it:\n",
            view.reported_by
        ),
    };
    if view.replicas.is_empty() {
        out.push_str("no replicas\n");
        return out;
    }
    out.push_str(&table(
        &[
            "ID",
            "ADDRESS",
            "KEY",
            "ROLE",
            "MATCHED",
            "LAG",
            "HEALTHY",
            "LAST CONTACT",
        ],
        view.replicas
            .iter()
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.address.clone(),
                    // The start of it, to compare; --json has it whole.
                    r.key.map_or_else(
                        || "not recorded".to_owned(),
                        |k| k.to_string()[..16].to_owned(),
                    ),
                    role_text(r.role).to_owned(),
                    opt(r.matched_index),
                    opt(r.lag),
                    r.healthy
                        .map_or(NONE, |h| if h { "yes" } else { "no" })
                        .to_owned(),
                    r.last_contact_ms
                        .map_or_else(|| NONE.to_owned(), |ms| format!("{ms}ms ago")),
                ]
            })
            .collect(),
    ));
    out
}

fn role_text(role: ReplicaRole) -> &'static str {
    match role {
        ReplicaRole::Leader => "leader",
        ReplicaRole::Follower => "follower",
        ReplicaRole::Candidate => "candidate",
        ReplicaRole::Learner => "learner",
        ReplicaRole::ShuttingDown => "shutting-down",
        ReplicaRole::Voter => "voter",
    }
}

pub fn route_text(r: &RouteView) -> String {
    let backups: Vec<String> = r.gateways.iter().skip(1).map(ToString::to_string).collect();
    let mut text = match r.gateway {
        Some(g) => format!("{} via {} (gateway {g})", r.target, r.via),
        None => format!("{} via {}", r.target, r.via),
    };
    if !backups.is_empty() {
        text.push_str(&format!(", then {}", backups.join(", then ")));
    }
    text
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        NONE.to_owned()
    } else {
        s.to_owned()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| NONE.to_owned(), |v| v.to_string())
}

fn join<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return NONE.to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// How long ago `then_ms` was, in the largest whole unit: `42s ago`, `5m ago`, `3d ago`.
fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0 => "just now".to_owned(),
        1..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// `2025-06-01 12:00:00 UTC`, without a date library: the civil-from-days algorithm
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 0000-03-01, so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use crate::api::views::MemberCounts;
    use meshd_proto::config::Ipv6Egress;

    use super::*;

    fn member(node: &str, name: &str, authorized: bool, seen: Option<u64>) -> MemberView {
        MemberView {
            node_id: node.parse().unwrap(),
            key_fingerprint: "ab12:cd34:ef56:7890".into(),
            name: name.into(),
            authorized,
            ipv4: if authorized {
                vec!["10.147.0.12".parse().unwrap()]
            } else {
                vec![]
            },
            container_subnet: authorized.then(|| "172.28.0.0/24".parse().unwrap()),
            sixplane_subnet: Some("fc9c:e1a3:f889:e92c:eee5::/80".parse().unwrap()),
            delegated_prefix: None,
            delegated_subnet: None,
            rfc4193_address: None,
            physical_endpoint: None,
            local_endpoints: vec![],
            port_mapped: false,
            relay: false,
            created_ms: 0,
            last_authorized_ms: None,
            last_deauthorized_ms: None,
            last_seen_ms: seen,
            hostname: None,
            version: None,
            online: false,
            last_report_ms: None,
            paths: None,
        }
    }

    #[test]
    fn replica_table_shows_roles_and_progress() {
        use crate::replica::ReplicaStatus;
        let status = |id, role, lag: Option<u64>, healthy| ReplicaStatus {
            id,
            address: format!("10.0.0.{id}:9994"),
            key: (id != 3).then_some(crate::raft::ReplicaKey([0x3f; 32])),
            role,
            matched_index: lag.map(|l| 42 - l),
            lag,
            healthy,
            last_contact_ms: healthy.map(|_| 120),
        };
        let mut view = ClusterView {
            leader: Some(1),
            term: 3,
            reported_by: 1,
            last_log_index: Some(42),
            replicas: vec![
                status(1, ReplicaRole::Leader, Some(0), Some(true)),
                status(2, ReplicaRole::Follower, Some(0), Some(true)),
                status(3, ReplicaRole::Learner, Some(40), Some(false)),
            ],
            note: None,
        };
        assert_eq!(
            replica_table(&view),
            "leader: replica 1, term 3, last log index 42\n\
             ID  ADDRESS        KEY               ROLE      MATCHED  LAG  HEALTHY  LAST CONTACT\n\
             1   10.0.0.1:9994  3f3f3f3f3f3f3f3f  leader    42       0    yes      120ms ago\n\
             2   10.0.0.2:9994  3f3f3f3f3f3f3f3f  follower  42       0    yes      120ms ago\n\
             3   10.0.0.3:9994  not recorded      learner   2        40   no       120ms ago\n"
        );
        view.leader = None;
        view.note = Some("no replica is leader right now".into());
        view.replicas = vec![status(2, ReplicaRole::Voter, None, None)];
        assert_eq!(
            replica_table(&view),
            "leader: unknown (no replica is leader right now); as replica 1 sees it:\n\
             ID  ADDRESS        KEY               ROLE   MATCHED  LAG  HEALTHY  LAST CONTACT\n\
             2   10.0.0.2:9994  3f3f3f3f3f3f3f3f  voter  -        -    -        -\n"
        );
    }

    #[test]
    fn member_table_aligns_columns() {
        let now = 1_000_000_000;
        let mut reporting = member("89e92ceee5", "web-1", true, Some(now - 42_000));
        reporting.paths = Some(PathCounts {
            direct: 2,
            relay: 1,
            none: 0,
        });
        let mut online = member("5e4d3c2b1a", "db-1", true, Some(now - 1_000));
        online.online = true;
        online.paths = Some(PathCounts::default());
        let text = member_table(
            &[reporting, online, member("1a2b3c4d5e", "", false, None)],
            now,
        );
        let expected = "\
NODE ID     KEY                  NAME   AUTHORIZED  IPV4         CONTAINER SUBNET  6PLANE /80                     PATHS              LAST SEEN
89e92ceee5  ab12:cd34:ef56:7890  web-1  yes         10.147.0.12  172.28.0.0/24     fc9c:e1a3:f889:e92c:eee5::/80  2 direct, 1 relay  42s ago
5e4d3c2b1a  ab12:cd34:ef56:7890  db-1   yes         10.147.0.12  172.28.0.0/24     fc9c:e1a3:f889:e92c:eee5::/80  no peers           online
1a2b3c4d5e  ab12:cd34:ef56:7890  -      no          -            -                 fc9c:e1a3:f889:e92c:eee5::/80  -                  never
";
        assert_eq!(text, expected);
    }

    #[test]
    fn network_details_lists_settings_and_routes() {
        let n = NetworkView {
            id: "8056c2e21c000001".parse().unwrap(),
            name: "prod".into(),
            revision: 7,
            mtu: 1420,
            sixplane: false,
            rfc4193: true,
            v4_pools: vec!["10.77.0.0/16".parse().unwrap()],
            container_pool: "10.78.0.0/16".parse().unwrap(),
            container_prefix: 24,
            sixplane_range: None,
            rfc4193_range: Some("fd80:56c2:e21c:1:99:9300::/88".parse().unwrap()),
            ipv6_egress: Ipv6Egress::Nat66,
            routes: vec![
                RouteView {
                    target: "192.168.50.0/24".parse().unwrap(),
                    via: "89e92ceee5".parse().unwrap(),
                    gateway: None,
                    gateways: vec!["89e92ceee5".parse().unwrap(), "5ba1c0ffee".parse().unwrap()],
                },
                RouteView {
                    target: "fd42::/64".parse().unwrap(),
                    via: "89e92ceee5".parse().unwrap(),
                    gateway: Some("10.77.0.12".parse().unwrap()),
                    gateways: vec!["89e92ceee5".parse().unwrap()],
                },
            ],
            members: MemberCounts {
                total: 3,
                authorized: 2,
            },
            created_ms: 1_748_779_200_000,
        };
        let expected = "\
network         8056c2e21c000001
name            prod
revision        7
mtu             1420
ipv4 pools      10.77.0.0/16
container pool  10.78.0.0/16, a /24 per member
6plane          off
rfc4193         fd80:56c2:e21c:1:99:9300::/88, an address per member
ipv6 egress     nat66
members         3 (2 authorized)
created         2025-06-01 12:00:00 UTC
routes          192.168.50.0/24 via 89e92ceee5, then 5ba1c0ffee
                fd42::/64 via 89e92ceee5 (gateway 10.77.0.12)
";
        assert_eq!(network_details(&n), expected);
        let list = network_table(std::slice::from_ref(&n));
        assert_eq!(
            list,
            "\
NETWORK ID        NAME  MEMBERS  AUTHORIZED  IPV4 POOLS    CONTAINER POOL  ROUTES
8056c2e21c000001  prod  3        2           10.77.0.0/16  10.78.0.0/16    2
"
        );
        assert!(network_table(&[]).starts_with("no networks"));
    }

    #[test]
    fn times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
        assert_eq!(ago(10_000, 10_500), "just now");
        assert_eq!(ago(3_600_000, 0), "1h ago");
        assert_eq!(ago(120_000, 0), "2m ago");
        assert_eq!(ago(3 * 86_400_000, 0), "3d ago");
    }
}
