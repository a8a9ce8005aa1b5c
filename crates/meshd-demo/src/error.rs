//! Why the demo failed. Each displays as one line, except the tails of logs that explain
//! why a process exited.

use meshd_lab::LabError;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Namespaces, veths and TUN devices need root.
    #[error("`meshd demo` needs root: it creates network namespaces, veths and TUN devices")]
    NotRoot,
    /// Building or using the lab failed, or the demo was interrupted.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A `meshd` command inside the lab failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A command succeeded but printed something the demo cannot use.
    #[error("{0}")]
    Output(String),
    /// A process the demo started exited early.
    #[error("{what} exited:\n{log_tail}")]
    Exited { what: String, log_tail: String },
    /// Something did not come up in time.
    #[error("{0}")]
    Timeout(String),
    /// Pings across the mesh failed.
    #[error("{failed} of {total} {what} failed")]
    Pings {
        failed: usize,
        total: usize,
        what: &'static str,
    },
}
