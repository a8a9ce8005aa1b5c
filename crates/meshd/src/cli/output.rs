//! What every command prints: plain text and `--json` on stdout, tables for people.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;

/// Writes `text` to stdout, failing (instead of panicking, as `print!` does) when stdout is
/// closed, e.g. piped into `head`.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Writes `value` as pretty JSON and a newline: what `--json` prints.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    print(&format!("{text}\n"))
}
