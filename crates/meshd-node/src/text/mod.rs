//! The node's views as text for people: what `meshd status`, `meshd peers` and
//! `meshd join` print without `--json`. Pure functions of the daemon's API views, so they
//! are tested without a daemon.

pub mod peers;
pub mod status;
pub mod units;
