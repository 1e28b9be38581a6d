//! Upstream: connections from the gateway to the original destination (DESIGN §1).
//!
//! Every socket carries the bypass mark before connect(), so the redirect programs leave it
//! alone (the gateway's own pid is a second guard in the programs).

use std::{net::SocketAddr, time::Duration};

use tokio::net::{TcpSocket, TcpStream};

use crate::redirect::origdst::OrigDstAddr;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot create socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot set SO_MARK {mark:#x} (needs CAP_NET_ADMIN): {source}")]
    Mark { mark: u32, source: std::io::Error },
    #[error("connect to {dst}: {source}")]
    Connect {
        dst: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {dst}: timed out after {after:?}")]
    Timeout { dst: SocketAddr, after: Duration },
}

/// Connect to `dst` with the bypass mark set.
pub async fn connect(
    dst: OrigDstAddr,
    mark: u32,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let dst = dst.0;
    let sock = match dst {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(UpstreamError::Socket)?;
    socket2::SockRef::from(&sock)
        .set_mark(mark)
        .map_err(|source| UpstreamError::Mark { mark, source })?;
    let stream = tokio::time::timeout(timeout, sock.connect(dst))
        .await
        .map_err(|_| UpstreamError::Timeout {
            dst,
            after: timeout,
        })?
        .map_err(|source| UpstreamError::Connect { dst, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

pub mod h2;
pub mod pool;
