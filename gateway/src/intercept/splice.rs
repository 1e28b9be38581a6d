//! Splice: move bytes both ways between two TCP streams until both sides are done.
//!
//! Zero-copy: each direction moves pages socket → pipe → socket with splice(2), so the payload
//! never enters userspace (a userspace copy loop halves loopback throughput on two cores).
//! Byte counts survive errors (the connection result reports them either way), an EOF on one
//! side is passed on as a FIN (half-close), and an error on either side ends both directions
//! (the other side is reset).
//! A reset or broken pipe is how many clients close: reported as `reset`, not as a failure.

use std::{
    io,
    net::Shutdown,
    os::fd::OwnedFd,
    sync::atomic::{AtomicU64, Ordering},
};

use nix::{
    fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice as splice2},
    unistd::pipe2,
};
use tokio::{io::Interest, net::TcpStream};

/// Pipe capacity asked for; the kernel may grant less (pipe-max-size), we use what we get.
const PIPE: i32 = 1 << 20;

#[derive(Debug, Default)]
pub struct SpliceStats {
    /// Client → upstream bytes.
    pub up: u64,
    /// Upstream → client bytes.
    pub down: u64,
    /// One side reset the connection (or the pipe broke).
    pub reset: bool,
    /// Any other I/O error.
    pub error: Option<io::Error>,
}

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

fn pipe() -> io::Result<Pipe> {
    let (r, w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let cap = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE))
        .or_else(|_| fcntl(&w, FcntlArg::F_GETPIPE_SZ))
        .map_err(io::Error::from)? as usize;
    Ok(Pipe { r, w, cap })
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// One direction: `src` → pipe → `dst`, until EOF (then FIN to `dst`) or an error.
async fn copy_dir(src: &TcpStream, dst: &TcpStream, n: &AtomicU64) -> io::Result<()> {
    let p = pipe()?;
    loop {
        src.readable().await?;
        let got = match src.try_io(Interest::READABLE, || {
            splice2(src, None, &p.w, None, p.cap, flags()).map_err(io::Error::from)
        }) {
            Ok(0) => {
                return socket2::SockRef::from(dst)
                    .shutdown(Shutdown::Write)
                    .or_else(|e| {
                        // The other side already went away: nothing left to tell it.
                        if e.raw_os_error() == Some(nix::libc::ENOTCONN) {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    });
            }
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut left = got;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice2(&p.r, None, dst, None, left, flags()).map_err(io::Error::from)
            }) {
                Ok(k) => {
                    left -= k;
                    n.fetch_add(k as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

pub(super) fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    ) || e.raw_os_error() == Some(nix::libc::ENOTCONN)
}

pub async fn splice(client: TcpStream, upstream: TcpStream) -> SpliceStats {
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let err = {
        let a = copy_dir(&client, &upstream, &up);
        let b = copy_dir(&upstream, &client, &down);
        tokio::pin!(a, b);
        let (mut a_done, mut b_done) = (false, false);
        let mut err = None;
        while !(a_done && b_done) {
            tokio::select! {
                r = &mut a, if !a_done => { a_done = true; if let Err(e) = r { err = Some(e); break; } }
                r = &mut b, if !b_done => { b_done = true; if let Err(e) = r { err = Some(e); break; } }
            }
        }
        err
    };
    if err.is_some() {
        // One side failed: the other learns it by a reset, not by a clean close.
        for s in [&client, &upstream] {
            let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
        }
    }
    let mut stats = SpliceStats {
        up: up.into_inner(),
        down: down.into_inner(),
        ..Default::default()
    };
    match err {
        Some(e) if is_reset(&e) => stats.reset = true,
        Some(e) => stats.error = Some(e),
        None => {}
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_up, mut server) = pair().await;
        let task = tokio::spawn(splice(proxy_client, proxy_up));
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload, "client bytes arrive unchanged, then EOF");
        server.write_all(b"answer after half-close").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer after half-close");
        let stats = task.await.unwrap();
        assert_eq!((stats.up, stats.down), (300_000, 23));
        assert!(!stats.reset && stats.error.is_none());
    }

    #[tokio::test]
    async fn a_reset_ends_both_directions_and_keeps_counts() {
        let (mut client, proxy_client) = pair().await;
        let (proxy_up, server) = pair().await;
        let task = tokio::spawn(splice(proxy_client, proxy_up));
        client.write_all(b"hello").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Close with unread data pending → RST.
        let mut server = server;
        let mut five = [0u8; 5];
        server.read_exact(&mut five).await.unwrap();
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client);
        let stats = tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("splice ends")
            .unwrap();
        assert_eq!(stats.up, 5);
        assert!(stats.reset || stats.error.is_none(), "{stats:?}");
        drop(server);
    }
}
