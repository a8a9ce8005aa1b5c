//! `meshd`: a peer-to-peer L3 VPN for Docker hosts across clouds.
//!
//! Exit codes: 0 on success, 1 when a command fails (one line `meshd: <reason>`, maybe a
//! `hint:` line), 2 on usage errors (reported by clap).
#![forbid(unsafe_code)]

mod cli;

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprint!("{}", render_error(&error));
            ExitCode::FAILURE
        }
    }
}

/// The text printed for a failed command: `meshd: <reason>` on one line, then an optional
/// `hint: <hint>` line.
fn render_error(error: &anyhow::Error) -> String {
    let reason = one_line(&format!("{error:#}"));
    let mut text = format!("meshd: {reason}\n");
    if let Some(hint) = hint_for(error) {
        text.push_str(&format!("hint: {}\n", one_line(&hint)));
    }
    text
}

/// The hint attached with [`cli::ResultExt::hint`] (the outermost one), else a generic
/// one for errors whose cause is clear.
fn hint_for(error: &anyhow::Error) -> Option<String> {
    if let Some(hinted) = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<cli::Hinted>())
    {
        return Some(hinted.hint().to_owned());
    }
    let permission_denied = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::PermissionDenied)
    });
    permission_denied.then(|| "this needs root (or CAP_NET_ADMIN); try again with sudo".to_owned())
}

/// Joins the lines of a message so that the error stays on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;
    use crate::cli::ResultExt;

    #[test]
    fn plain_error_is_one_line_without_hint() {
        let error = anyhow::anyhow!("no daemon\nis running").context("cannot read status");
        assert_eq!(
            render_error(&error),
            "meshd: cannot read status: no daemon is running\n"
        );
    }

    #[test]
    fn hint_is_printed_after_the_reason() {
        let result: Result<(), std::io::Error> =
            Err(std::io::Error::new(ErrorKind::NotFound, "no socket"));
        let error = result
            .context("cannot reach the daemon")
            .hint("start it with `meshd daemon`")
            .context("meshd status")
            .expect_err("the result is an error");
        assert_eq!(
            render_error(&error),
            "meshd: meshd status: cannot reach the daemon: no socket\n\
             hint: start it with `meshd daemon`\n"
        );
    }

    #[test]
    fn permission_denied_suggests_root() {
        let error = anyhow::Error::new(std::io::Error::from(ErrorKind::PermissionDenied))
            .context("cannot open /dev/net/tun");
        assert!(render_error(&error).contains("\nhint: this needs root"));
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        cli::Cli::command().debug_assert();
    }
}
