//! `meshd demo`: a controller and three hosts, each in a network namespace of its own with
//! its own daemon, joined to one network and authorized; then, as on Docker hosts, a bridge
//! per host on the subnets `meshd docker-config` prints, two "containers" behind it, and
//! pings across the mesh over IPv4 and IPv6.
//!
//! The demo drives the `meshd` executable it is given, exactly as a user would, inside a
//! [`meshd_lab::Lab`]; it never calls the daemon's or the controller's code directly.
//!
//! - [`scenario`]: the nine steps.
//! - [`commands`]: `meshd` commands run inside the lab and their output.
//! - [`containers`]: the bridges and "containers" behind each host.
//! - [`report`]: what the demo prints beyond its steps.
#![forbid(unsafe_code)]

pub mod commands;
pub mod containers;
pub mod error;
pub mod report;
pub mod scenario;

use std::time::Instant;

use meshd_lab::{Lab, Naming, interrupt};

pub use error::DemoError;

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `meshd` executable the lab's hosts run.
    pub exe: String,
    /// Leave the namespaces and processes running after a successful demo.
    pub keep: bool,
}

/// Runs the demo from start to end. The lab is removed on every path (also on SIGINT and
/// SIGTERM) unless `keep` is set and the demo succeeded.
pub fn run(settings: Settings) -> Result<(), DemoError> {
    if !meshd_lab::is_root() {
        return Err(DemoError::NotRoot);
    }
    interrupt::install_signal_handler("the demo")?;
    let mut lab = Lab::new(Naming::demo(), &[])?;
    let result = scenario::Demo::new(&mut lab, settings.exe.clone(), Instant::now()).run();
    match result {
        Ok(summary) if settings.keep => {
            lab.keep();
            report::print_keep(&lab, &settings.exe, &summary);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            // The logs are about to go with the lab's directory: show their ends first.
            if !matches!(e, DemoError::Lab(meshd_lab::LabError::Interrupted)) {
                report::print_log_tails(lab.dir());
            }
            Err(e)
        } // `lab` drops here on every path: it cleans up unless kept.
    }
}
