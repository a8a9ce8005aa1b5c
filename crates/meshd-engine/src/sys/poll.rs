//! Waiting on descriptors: an epoll set, an eventfd to wake its waiter, and a one-off wait
//! for room to write. mio would wrap these too, but for three calls on one thread the plain
//! calls are shorter than the adapter.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::check;

/// Takes ownership of a descriptor a system call just returned, or its error.
fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: only called on a descriptor the kernel just created for us, which nothing else
    // holds.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A level-triggered epoll set whose events carry a caller-chosen token.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

/// An event of [`Epoll::wait`]: the token the descriptor was added with.
pub type Token = u64;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: a plain system call with a constant flag; the result is checked.
        owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(Epoll)
    }

    /// Reports `fd` when readable, as `token`. Safe to call from any thread while another
    /// waits.
    pub fn add(&self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token)
    }

    /// Stops reporting `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_DEL, fd, 0)
    }

    fn control(&self, op: libc::c_int, fd: RawFd, token: Token) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` lives for the call and the kernel copies it (DEL ignores it). A
        // stale `fd` is rejected by the kernel (EBADF/ENOENT), not undefined behaviour.
        check(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) }).map(drop)
    }

    /// Waits until something is readable; returns the tokens in `tokens` (replaced).
    /// Interrupted waits return with none.
    pub fn wait(&self, tokens: &mut Vec<Token>) -> io::Result<()> {
        self.wait_for(tokens, -1)
    }

    /// Like [`Epoll::wait`], but returns with none after `ms` (0: at once).
    pub fn wait_for(&self, tokens: &mut Vec<Token>, ms: libc::c_int) -> io::Result<()> {
        const EVENTS: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        tokens.clear();
        // SAFETY: `events` has room for EVENTS entries and outlives the call; the kernel
        // writes at most that many.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                ms,
            )
        };
        let n = match check(n) {
            Ok(n) => usize::try_from(n).unwrap_or(0).min(EVENTS),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        tokens.extend(events[..n].iter().map(|e| e.u64));
        Ok(())
    }
}

/// A non-blocking eventfd: one thread [`EventFd::notify`]s, the one waiting on it wakes.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: a plain system call with constant flags; the result is checked.
        owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }).map(EventFd)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    pub fn notify(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer. It can only fail once the counter would
        // overflow, after 2^64 notifications nobody consumed.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Consumes the pending notifications (none: nothing happens).
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN when nothing is pending.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// Waits up to `ms` for room to write on `fd`; `WouldBlock` if there was none.
pub fn wait_writable(fd: BorrowedFd<'_>, ms: i32) -> io::Result<()> {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the length of the call; poll(2) only writes `revents`.
    match check(unsafe { libc::poll(&mut poll, 1, ms) })? {
        0 => Err(io::ErrorKind::WouldBlock.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_notified_eventfd_wakes_the_waiter_with_its_token() {
        let epoll = Epoll::new().unwrap();
        let wake = EventFd::new().unwrap();
        epoll.add(wake.fd(), 7).unwrap();
        wake.notify();
        let mut tokens = Vec::new();
        epoll.wait(&mut tokens).unwrap();
        assert_eq!(tokens, [7]);
        wake.clear();
        // Level-triggered and cleared: a second descriptor is the only one reported.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        epoll.add(socket.as_fd(), 9).unwrap();
        socket.send_to(b"x", socket.local_addr().unwrap()).unwrap();
        epoll.wait(&mut tokens).unwrap();
        assert_eq!(tokens, [9]);
        epoll.wait(&mut tokens).unwrap();
        assert_eq!(tokens, [9], "still readable, still reported");
        epoll.delete(socket.as_raw_fd()).unwrap();
        assert!(epoll.delete(socket.as_raw_fd()).is_err(), "already gone");
        wait_writable(socket.as_fd(), 100).unwrap();
    }
}
