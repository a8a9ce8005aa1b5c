//! The containers test's later phases, one file each.

pub mod egress;
pub mod failover;
pub mod prefix;
