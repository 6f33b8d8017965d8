//! Read readiness of several sockets, one-shot: a socket that reported ready stays quiet until
//! it is armed again.
//!
//! A master sends every group's advert at once, so a backup's packets come in bursts: 200
//! groups are 200 datagrams within a millisecond. Woken per datagram, the backup spent more on
//! wake-ups than on the adverts (and so did the sender, whose softirq wakes it). With one-shot
//! readiness the driver takes the first datagram at once, then lets the rest of the burst
//! queue in the socket and takes it in one pass a moment later.
//!
//! The sockets sit in an epoll set of their own (`EPOLLONESHOT`); that set's descriptor is what
//! the tokio reactor watches.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::task::{Context, Poll};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use tokio::io::unix::AsyncFd;

/// The inner epoll descriptor, as the reactor needs it.
#[derive(Debug)]
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// Sockets watched for read readiness, identified by their index in the list given to
/// [`ReadySet::new`].
#[derive(Debug)]
pub struct ReadySet {
    epoll: AsyncFd<EpollFd>,
    len: usize,
}

const ONE_SHOT_READ: EpollFlags = EpollFlags::EPOLLIN.union(EpollFlags::EPOLLONESHOT);

impl ReadySet {
    /// Watches `members`, all armed. Needs a tokio runtime with I/O enabled. (A member closed
    /// while in the set just leaves it: epoll forgets closed descriptions.)
    pub fn new(members: &[BorrowedFd<'_>]) -> io::Result<ReadySet> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for (idx, fd) in members.iter().enumerate() {
            epoll.add(fd, EpollEvent::new(ONE_SHOT_READ, idx as u64))?;
        }
        // SAFETY: `EpollFd` owns the epoll descriptor (an `OwnedFd`), keeps it open until it is
        // dropped, and always returns that same descriptor.
        let epoll = unsafe {
            AsyncFd::register_with_interest(EpollFd(epoll), tokio::io::Interest::READABLE)
        }?;
        Ok(ReadySet {
            epoll,
            len: members.len(),
        })
    }

    /// Appends the members that became readable to `ready` (they are disarmed now), or returns
    /// `Pending` and wakes `cx` when one does.
    pub fn poll_ready(&self, cx: &mut Context<'_>, ready: &mut Vec<usize>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = match self.epoll.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let mut events = [EpollEvent::empty(); 16];
            match self.epoll.get_ref().0.wait(&mut events, 0u8) {
                Ok(0) => guard.clear_ready(), // stale: look again, registering `cx`
                Ok(n) => {
                    ready.extend(events[..n].iter().map(|e| e.data() as usize));
                    return Poll::Ready(Ok(()));
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// Watches member `idx` (descriptor `fd`, as given to [`ReadySet::new`]) again. If it has
    /// data queued already, it reports ready at once.
    pub fn arm(&self, idx: usize, fd: BorrowedFd<'_>) -> io::Result<()> {
        debug_assert!(idx < self.len);
        let mut event = EpollEvent::new(ONE_SHOT_READ, idx as u64);
        self.epoll.get_ref().0.modify(fd, &mut event)?;
        Ok(())
    }
}
