//! Splice: copy bytes both ways between two TCP streams until both sides are done.
//!
//! Byte counts survive errors (the connection result reports them either way), an EOF on one
//! side is passed on as a FIN (half-close), and an error on either side ends both directions.
//! A reset or broken pipe is how many clients close: reported as `reset`, not as a failure.

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

const BUF: usize = 64 * 1024;

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

async fn copy_dir<R, W>(r: &mut R, w: &mut W, n: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..k]).await?;
        n.fetch_add(k as u64, Ordering::Relaxed);
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted
    ) || e.raw_os_error() == Some(nix::libc::ENOTCONN)
}

pub async fn splice(client: TcpStream, upstream: TcpStream) -> SpliceStats {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let err = {
        let a = copy_dir(&mut cr, &mut uw, &up);
        let b = copy_dir(&mut ur, &mut cw, &down);
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
    use tokio::net::TcpListener;

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
        client.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(client);
        let stats = tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("splice ends").unwrap();
        assert_eq!(stats.up, 5);
        assert!(stats.reset || stats.error.is_none(), "{stats:?}");
        drop(server);
    }
}
