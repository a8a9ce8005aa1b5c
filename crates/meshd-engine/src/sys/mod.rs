//! The crate's `unsafe`: the few system calls no safe crate wraps, each behind a safe
//! function with a `// SAFETY:` comment (quinn-udp keeps its `cmsg/` the same way).
//!
//! - [`netns`]: move the calling thread into a named network namespace (tests, the demo).
//! - `sockopt`: socket options socket2 does not offer (`SO_RCVBUFFORCE`, `SO_SNDBUFFORCE`).

pub mod netns;
pub(crate) mod sockopt;
