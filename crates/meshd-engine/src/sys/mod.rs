//! The crate's `unsafe`: the few system calls no safe crate wraps, each behind a safe
//! function with a `// SAFETY:` comment (quinn-udp keeps its `cmsg/` the same way).
//!
//! - [`netns`]: move the calling thread into a named network namespace (tests, the demo).
//! - `sockopt`: socket options socket2 does not offer (`SO_RCVBUFFORCE`, `SO_SNDBUFFORCE`,
//!   reading and restoring the path-MTU options).
//! - `poll`: a packet worker's epoll set and eventfd, and a bounded wait to write.

pub mod netns;
pub(crate) mod poll;
pub(crate) mod sockopt;

/// Sizes a socket's receive buffer to `bytes`, past `net.core.rmem_max` (`SO_RCVBUFFORCE`:
/// needs CAP_NET_ADMIN, else EPERM). For sockets outside the engine: the bench server's.
pub fn force_recv_buffer(socket: std::os::fd::BorrowedFd<'_>, bytes: usize) -> std::io::Result<()> {
    sockopt::force_buffer_size(socket, sockopt::Buffer::Receive, bytes)
}

/// A system call's return value, or the error it left in `errno` when it returned -1 (or any
/// negative value: the calls here return -1 and nothing else below zero).
pub(crate) fn check(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}
