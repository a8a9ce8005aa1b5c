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
    // SAFETY: `socket` is an open descriptor for the whole call; the option value is a
    // `c_int` on our stack, and we pass its exact size, so the kernel reads only that int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
