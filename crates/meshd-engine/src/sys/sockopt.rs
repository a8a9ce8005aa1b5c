//! Socket options socket2 does not wrap.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Which kernel buffer of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buffer {
    Receive,
    Send,
}

/// Sets a socket buffer with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, which ignore
/// `net.core.rmem_max`/`wmem_max` but need CAP_NET_ADMIN (EPERM without it). The kernel
/// doubles the value for its bookkeeping, as with `SO_RCVBUF`.
pub(crate) fn force_buffer_size(
    socket: BorrowedFd<'_>,
    buffer: Buffer,
    bytes: usize,
) -> io::Result<()> {
    let option = match buffer {
        Buffer::Receive => libc::SO_RCVBUFFORCE,
        Buffer::Send => libc::SO_SNDBUFFORCE,
    };
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(socket, libc::SOL_SOCKET, option, value)
}

/// Reads an integer socket option.
pub(crate) fn int_option(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `socket` is an open descriptor for the whole call; the kernel writes at most
    // `len` bytes (the size of the `c_int` on our stack) into `value`, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    super::check(rc).map(|_| value)
}

/// Sets an integer socket option.
pub(crate) fn set_int_option(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `socket` is an open descriptor for the whole call; the option value is a
    // `c_int` on our stack, and we pass its exact size, so the kernel reads only that int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    super::check(rc).map(drop)
}
