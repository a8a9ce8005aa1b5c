//! Why building or using a lab failed. Each displays as one line.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// `ip` refused a step; its stderr says why.
    #[error("ip {args}: {stderr}")]
    Ip { args: String, stderr: String },
    /// A command the lab runs itself (`nft`, `sysctl`, `conntrack`) failed; its stderr
    /// says why.
    #[error("{command}: {stderr}")]
    Command { command: String, stderr: String },
    /// A command could not be started at all.
    #[error("cannot run {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// SIGINT or SIGTERM arrived (see [`crate::interrupt`]).
    #[error("interrupted")]
    Interrupted,
}
