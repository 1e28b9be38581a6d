//! The kernel relay: a spliced connection whose bytes the gateway's threads never touch.
//!
//! After the decision to splice, the gateway has the client's socket (`client`, accepted) and
//! its own connection to the original destination (`upstream`, the ClientHello already
//! written to it). Both go into the relay's sockhashes (`redirect::relay`): each segment either
//! socket receives is then moved by the kernel's sk_skb verdict to the peer's send queue, in
//! order. What stays with the gateway is what the kernel does not do for it:
//! - **Start without a gap.** Whatever the client sent after its ClientHello is read and
//!   forwarded first, until its socket is empty; then both sockets get their target (where
//!   their bytes go) before either gets the verdict, so no segment meets a socket without a
//!   target; then a kick (`SO_RCVLOWAT`, which runs the socket's data-ready) hands on what
//!   arrived in between.
//! - **Pass FIN on, after the bytes before it.** A FIN is not data: the verdict never sees it.
//!   A watcher thread waits for the end of either stream (EPOLLRDHUP, never EPOLLIN: no wakeup
//!   per segment). Then the gateway waits until the peer's send queue has taken as many bytes
//!   as the verdict handed on from that side (the program counts them), and shuts the peer's
//!   write side down: half-close, byte-exact.
//! - **Errors end both.** A reset or error on either socket resets the other (`SO_LINGER` 0).
//!
//! When a connection cannot be relayed (the client already closed, a map is full), the
//! caller relays it with splice(2): [`Declined`] gives the streams back untouched.

use std::{
    collections::HashMap,
    io,
    net::Shutdown,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::{io::AsyncWriteExt as _, net::TcpStream, sync::mpsc};
use tracing::{debug, warn};

use super::splice::SpliceStats;
use crate::redirect::relay::{RelayMaps, Side};

/// Reads of what the client sent after its ClientHello before giving up on an empty socket
/// (a client that streams without waiting for the server): then splice(2) relays it.
const MAX_DRAIN_READS: usize = 16;

/// Why a connection went to splice(2) instead, and the streams, untouched past `forwarded`.
pub struct Declined {
    pub client: TcpStream,
    pub upstream: TcpStream,
    /// Client bytes read and forwarded to upstream before giving up.
    pub forwarded: u64,
    pub why: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Client = 0,
    Upstream = 1,
}

/// Relay `client` ↔ `upstream` in the kernel until both directions are closed or one fails.
pub async fn relay(
    maps: &RelayMaps,
    client: TcpStream,
    mut upstream: TcpStream,
) -> Result<SpliceStats, Declined> {
    let decline = |client, upstream, forwarded, why: String| Declined {
        client,
        upstream,
        forwarded,
        why,
    };
    // 1. Empty the client's socket: the verdict starts with segments nobody has read from.
    let mut forwarded = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut drained = false;
    for _ in 0..MAX_DRAIN_READS {
        match client.try_read(&mut buf) {
            Ok(0) => return Err(decline(client, upstream, forwarded, "client closed".into())),
            Ok(n) => {
                if let Err(e) = upstream.write_all(&buf[..n]).await {
                    return Err(decline(client, upstream, forwarded, e.to_string()));
                }
                forwarded += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                drained = true;
                break;
            }
            Err(e) => return Err(decline(client, upstream, forwarded, e.to_string())),
        }
    }
    if !drained {
        return Err(decline(
            client,
            upstream,
            forwarded,
            "the client keeps sending before the server answers".into(),
        ));
    }
    let cookie = |s: &TcpStream| socket2::SockRef::from(s).cookie();
    let (cc, uc) = match (cookie(&client), cookie(&upstream)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return Err(decline(
                client,
                upstream,
                forwarded,
                format!("SO_COOKIE: {e}"),
            ));
        }
    };
    // Off tokio's reactor: its registration asks for EPOLLIN, a wakeup per relayed segment.
    let (client, upstream) = match (client.into_std(), upstream.into_std()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            // into_std only fails when deregistering fails; the streams are gone with it.
            return Ok(SpliceStats {
                up: forwarded,
                error: Some(e),
                ..Default::default()
            });
        }
    };
    let (cs, us) = (
        Side {
            cookie: cc,
            fd: &client,
        },
        Side {
            cookie: uc,
            fd: &upstream,
        },
    );
    // 2. Targets first (no verdict yet), the send baselines, then the verdict on each.
    let back = |client: std::net::TcpStream, upstream: std::net::TcpStream, why: String| match (
        TcpStream::from_std(client),
        TcpStream::from_std(upstream),
    ) {
        (Ok(c), Ok(u)) => Err(decline(c, u, forwarded, why)),
        (Err(e), _) | (_, Err(e)) => Ok(SpliceStats {
            up: forwarded,
            error: Some(e),
            ..Default::default()
        }),
    };
    if let Err(e) = maps.prepare(&cs, &us) {
        return back(client, upstream, e.to_string());
    }
    let base = match (
        sent_baseline(client.as_fd()),
        sent_baseline(upstream.as_fd()),
    ) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => {
            maps.remove(cc, uc);
            return back(client, upstream, format!("send queue: {e}"));
        }
    };
    if let Err(e) = maps.start(&cs) {
        maps.remove(cc, uc);
        return back(client, upstream, e.to_string());
    }
    let mut stats = SpliceStats::default();
    let ended = async {
        // From here the client's bytes flow; a failure ends the connection (fail closed).
        maps.start(&us).map_err(io::Error::other)?;
        kick(client.as_fd())?;
        kick(upstream.as_fd())?;
        run(maps, [&client, &upstream], [cc, uc], base).await
    }
    .await;
    stats.up = forwarded + maps.count(cc);
    stats.down = maps.count(uc);
    maps.remove(cc, uc);
    if let Err(e) = ended {
        debug!(error = %e, "kernel relay ended with an error");
        // One side failed: the other learns it by a reset, not by a clean close.
        for s in [&client, &upstream] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
        if super::splice::is_reset(&e) {
            stats.reset = true;
        } else {
            stats.error = Some(e);
        }
    }
    Ok(stats)
}

/// Wait for the end of both directions, passing each FIN on after the bytes before it.
async fn run(
    maps: &RelayMaps,
    socks: [&std::net::TcpStream; 2],
    cookies: [u64; 2],
    base: [u64; 2],
) -> io::Result<()> {
    let mut watch = Watch::new(socks[0].as_fd(), socks[1].as_fd())?;
    let rx = &mut watch.rx;
    let stopped = || io::Error::other("kernel relay watcher stopped");
    // For each side: its end seen (FIN pending), its FIN passed on.
    let (mut ended, mut passed) = ([false; 2], [false; 2]);
    let mut backoff = Duration::from_micros(50);
    while !(passed[0] && passed[1]) {
        let waiting = (0..2).any(|i| ended[i] && !passed[i]);
        let ev = if waiting {
            match tokio::time::timeout(backoff, rx.recv()).await {
                Ok(ev) => Some(ev.ok_or_else(stopped)?),
                Err(_) => {
                    backoff = (backoff * 2).min(Duration::from_millis(10));
                    None
                }
            }
        } else {
            Some(rx.recv().await.ok_or_else(stopped)?)
        };
        if let Some((who, flags)) = ev {
            let i = who as usize;
            if flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
                && let Some(e) = socket2::SockRef::from(socks[i]).take_error()?
            {
                return Err(e);
            }
            if flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) && !ended[i] {
                ended[i] = true;
                // Everything up to the FIN through the verdict (it runs under the socket's
                // lock, which this takes), so the count below is final.
                kick(socks[i].as_fd())?;
            }
        }
        for i in 0..2 {
            if ended[i] && !passed[i] {
                let peer = socks[1 - i];
                if sent_since(peer.as_fd(), base[1 - i])? >= maps.count(cookies[i]) {
                    match peer.shutdown(Shutdown::Write) {
                        Err(e) if e.raw_os_error() != Some(nix::libc::ENOTCONN) => return Err(e),
                        _ => {}
                    }
                    passed[i] = true;
                    backoff = Duration::from_micros(50);
                }
            }
        }
    }
    Ok(())
}

/// Run the socket's data-ready now (setting `SO_RCVLOWAT` does): segments that arrived before
/// the verdict was on it are handed on, in order, instead of waiting for the next one.
fn kick(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, nix::libc::SOL_SOCKET, nix::libc::SO_RCVLOWAT, 1)
}

/// Bytes written into a socket so far, never more than the truth: acked, then still queued
/// (read in that order, an ack in between is missed, not counted twice).
fn sent_total_low(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let acked = tcp_bytes_acked(fd)?;
    Ok(acked + outq(fd)?)
}

/// The same, never less than the truth (queued first): the baseline to count from.
fn sent_baseline(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let q = outq(fd)?;
    Ok(tcp_bytes_acked(fd)? + q)
}

fn sent_since(fd: BorrowedFd<'_>, base: u64) -> io::Result<u64> {
    Ok(sent_total_low(fd)?.saturating_sub(base))
}

#[allow(unsafe_code)]
fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: a valid fd, a pointer to an i32 and its size.
    let r = unsafe {
        nix::libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            size_of::<i32>() as nix::libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[allow(unsafe_code)]
fn tcp_bytes_acked(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: tcp_info is plain data; the kernel writes at most `len` bytes into it.
    let mut info: nix::libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<nix::libc::tcp_info>() as nix::libc::socklen_t;
    let r = unsafe {
        nix::libc::getsockopt(
            fd.as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_bytes_acked)
}

/// Bytes in the send queue not yet acknowledged (SIOCOUTQ).
#[allow(unsafe_code)]
fn outq(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int.
    let r = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TIOCOUTQ, &raw mut n) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as u64)
}

/// The end of a stream or an error, on one side of one relayed connection.
type Event = (Who, EpollFlags);

/// One thread for every relayed connection: an epoll set asking for EPOLLRDHUP only (errors and
/// hangups are always reported), so relayed segments wake nobody.
struct Watcher {
    epoll: Epoll,
    subs: Mutex<HashMap<u64, mpsc::UnboundedSender<Event>>>,
    next: AtomicU64,
}

fn watcher() -> io::Result<&'static Watcher> {
    static W: OnceLock<Result<&'static Watcher, String>> = OnceLock::new();
    W.get_or_init(|| {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
        let w: &'static Watcher = Box::leak(Box::new(Watcher {
            epoll,
            subs: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }));
        std::thread::Builder::new()
            .name("gw-relay-watch".into())
            .spawn(move || w.run())
            .map_err(|e| e.to_string())?;
        Ok(w)
    })
    .clone()
    .map_err(io::Error::other)
}

impl Watcher {
    fn run(&self) {
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "kernel relay watcher stopped: relayed connections can no longer close");
                    self.subs.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    return;
                }
            };
            let subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
            for ev in &events[..n] {
                let (key, who) = (ev.data() >> 1, ev.data() & 1);
                if let Some(tx) = subs.get(&key) {
                    let who = if who == 0 { Who::Client } else { Who::Upstream };
                    let _ = tx.send((who, ev.events()));
                }
            }
        }
    }
}

/// A pair of sockets registered with the watcher; deregistered on drop.
struct Watch<'a> {
    key: u64,
    fds: [BorrowedFd<'a>; 2],
    rx: mpsc::UnboundedReceiver<Event>,
}

impl<'a> Watch<'a> {
    fn new(client: BorrowedFd<'a>, upstream: BorrowedFd<'a>) -> io::Result<Self> {
        let w = watcher()?;
        let key = w.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        w.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, tx);
        let this = Self {
            key,
            fds: [client, upstream],
            rx,
        };
        for (i, fd) in this.fds.iter().enumerate() {
            let flags = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
            w.epoll
                .add(fd, EpollEvent::new(flags, (key << 1) | i as u64))
                .map_err(io::Error::from)?;
        }
        Ok(this)
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Ok(w) = watcher() {
            for fd in &self.fds {
                let _ = w.epoll.delete(fd);
            }
            w.subs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.key);
        }
    }
}
