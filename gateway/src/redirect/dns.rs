//! The workloads' DNS, through the gateway: where the provider set learns the addresses the
//! workloads will actually dial (DESIGN §4; Cilium's DNS proxy for toFQDNs is the model).
//!
//! The programs send every DNS query of the attached cgroup (UDP and TCP port 53, to whatever
//! server its resolv.conf names) to the proxy's address and port. For each query: forward it,
//! byte for byte, to the server the workload asked (from a socket carrying the bypass mark);
//! read the answer; for every name in it that is a provider host (exact or wildcard, the CNAME
//! chain followed), write its A, AAAA and SVCB/HTTPS address hints into the kernel set; only
//! then pass the answer on, unchanged. The workload's connect() that follows is redirected.
//!
//! Fail closed: an answer that cannot be read, or whose provider addresses cannot be written, is
//! replaced by SERVFAIL (the workload's lookup fails, and nothing reaches a provider through an
//! address the set does not hold). A query whose server does not answer gets SERVFAIL after
//! `dns.query_timeout`. Other names are never held beyond their own server's answer.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{
        RData,
        rdata::svcb::{SVCB, SvcParamValue},
    },
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
};
use tracing::{debug, info, warn};

use super::{
    addrset::ProviderSet,
    origdst::{ClientAddr, OrigDstAddr, ProxyAddr, UdpOrigDst},
};
use crate::{limits::Limits, provider::Catalog};

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the answer is not a DNS message: {0}")]
    Unreadable(String),
    #[error("cannot write provider addresses into the kernel set: {0}")]
    Learn(String),
    #[error("server {server}: {source}")]
    Upstream {
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("server {server} did not answer within {after:?}")]
    Timeout { server: SocketAddr, after: Duration },
    #[error("the query loops back to the gateway")]
    Loop,
}

impl DnsError {
    fn result(&self) -> &'static str {
        match self {
            DnsError::Unreadable(_) | DnsError::Learn(_) | DnsError::Loop => "servfail",
            DnsError::Upstream { .. } | DnsError::Timeout { .. } => "upstream_failed",
        }
    }
}

/// A provider address found in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub ip: IpAddr,
    pub ttl: u32,
    pub flags: u8,
}

fn norm(name: &hickory_proto::rr::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// Every provider address in `answer`: addresses owned by a provider name, or by a name that a
/// provider name's CNAME chain reaches. `flags_of` says which names are provider hosts.
pub fn provider_addresses(answer: &Message, flags_of: &dyn Fn(&str) -> Option<u8>) -> Vec<Found> {
    let mut provider: HashMap<String, u8> = HashMap::new();
    let seed = |name: String, provider: &mut HashMap<String, u8>| {
        if let Some(f) = flags_of(&name) {
            provider.entry(name).and_modify(|e| *e &= f).or_insert(f);
        }
    };
    for q in answer.queries() {
        seed(norm(q.name()), &mut provider);
    }
    let mut cnames: Vec<(String, String)> = Vec::new();
    for r in answer.answers() {
        seed(norm(r.name()), &mut provider);
        if let RData::CNAME(c) = r.data() {
            let target = norm(&c.0);
            seed(target.clone(), &mut provider);
            cnames.push((norm(r.name()), target));
        }
    }
    // Follow the chains forward: a name a provider name points at is the provider's too. Each
    // round adds at least one name or stops, so this ends within cnames.len() rounds.
    for _ in 0..=cnames.len() {
        let mut grew = false;
        for (owner, target) in &cnames {
            if let Some(f) = provider.get(owner).copied()
                && !provider.contains_key(target)
            {
                provider.insert(target.clone(), f);
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut out = Vec::new();
    for r in answer.answers() {
        let owner = norm(r.name());
        let Some(flags) = provider.get(&owner).copied() else {
            continue;
        };
        let mut push = |ip: IpAddr| {
            out.push(Found {
                name: owner.clone(),
                ip,
                ttl: r.ttl(),
                flags,
            })
        };
        match r.data() {
            RData::A(a) => push(IpAddr::V4(a.0)),
            RData::AAAA(a) => push(IpAddr::V6(a.0)),
            RData::HTTPS(h) => hints(&h.0, &mut push),
            RData::SVCB(s) => hints(s, &mut push),
            _ => {}
        }
    }
    out
}

/// Address hints of an SVCB/HTTPS record: clients may dial them before A/AAAA arrive.
fn hints(s: &SVCB, push: &mut dyn FnMut(IpAddr)) {
    for (_, v) in s.svc_params() {
        match v {
            SvcParamValue::Ipv4Hint(h) => h.0.iter().for_each(|a| push(IpAddr::V4(a.0))),
            SvcParamValue::Ipv6Hint(h) => h.0.iter().for_each(|a| push(IpAddr::V6(a.0))),
            _ => {}
        }
    }
}

/// SERVFAIL for `query` (same id and question), or nothing when the query is not readable.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::ServFail)
        .add_queries(q.queries().to_vec());
    m.to_vec().ok()
}

/// Who asked, for the log.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    /// Its cgroup: a quarter of the queries in flight is the most one cgroup may hold.
    pub cgroup_id: u64,
}

/// The DNS service: forwarding, learning, answering.
pub struct DnsProxy {
    catalog: Arc<Catalog>,
    set: Arc<ProviderSet>,
    mark: u32,
    timeout: Duration,
    /// Queries in flight, per asking cgroup (a quarter of `dns.max_inflight`) and in all.
    inflight: Arc<Limits>,
    /// The proxy's own addresses: a query "to" them would loop.
    own: Vec<SocketAddr>,
    /// Connected, marked sockets per server the workloads ask, reused query after query.
    forwarders: std::sync::Mutex<HashMap<SocketAddr, Arc<Forwarder>>>,
}

const MAX_MESSAGE: usize = 65_535;
/// Servers with pooled sockets; queries to more servers get a socket each.
const MAX_FORWARDERS: usize = 64;
/// Sockets per server (each on its own random port): a forged answer must guess the port
/// among these as well as the 16-bit id the gateway picked, and repeat the question.
const SOCKETS_PER_SERVER: usize = 4;

/// Whether `answer` answers `query`: same id, a response, the same question (names compared
/// without case, as a server may echo 0x20-randomised case back).
fn answers(query: &[u8], answer: &[u8]) -> bool {
    let Some(qlen) = question_len(query) else {
        return answer.len() >= 12 && answer[..2] == query[..2] && answer[2] & 0x80 != 0;
    };
    answer.len() >= 12 + qlen
        && answer[..2] == query[..2]
        && answer[2] & 0x80 != 0
        && answer[12..12 + qlen].eq_ignore_ascii_case(&query[12..12 + qlen])
}

/// Length of the first question (name + type + class), when the query has exactly one.
fn question_len(q: &[u8]) -> Option<usize> {
    if q.len() < 12 || q[4..6] != [0, 1] {
        return None;
    }
    let mut i = 12;
    loop {
        let l = *q.get(i)? as usize;
        if l == 0 {
            break;
        }
        if l & 0xc0 != 0 {
            return None;
        }
        i += 1 + l;
    }
    (i + 5 <= q.len()).then_some(i + 5 - 12)
}

type Waiter = (Vec<u8>, tokio::sync::oneshot::Sender<Vec<u8>>);

/// Pooled upstream sockets for one server: each query gets a fresh random id (the client's is
/// put back on the answer), one reader per socket hands answers to their waiters.
struct Forwarder {
    server: SocketAddr,
    socks: Vec<Arc<UdpSocket>>,
    /// Our id → (the query, to check the answer's question against; the waiter).
    pending: std::sync::Mutex<HashMap<u16, Waiter>>,
}

impl Forwarder {
    fn start(server: SocketAddr, mark: u32) -> std::io::Result<Arc<Self>> {
        let socks = (0..SOCKETS_PER_SERVER)
            .map(|_| marked_udp(server, mark).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        let f = Arc::new(Self {
            server,
            socks,
            pending: Default::default(),
        });
        for s in &f.socks {
            tokio::spawn(Self::read(Arc::downgrade(&f), s.clone()));
        }
        Ok(f)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Waiter>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read(this: std::sync::Weak<Self>, sock: Arc<UdpSocket>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let r = sock.recv(&mut buf).await;
            let Some(this) = this.upgrade() else { return };
            match r {
                Ok(n) if n >= 12 => {
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    let mut p = this.pending();
                    if p.get(&id).is_some_and(|(q, _)| answers(q, &buf[..n]))
                        && let Some((_, tx)) = p.remove(&id)
                    {
                        let _ = tx.send(buf[..n].to_vec());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // ICMP unreachable on a connected socket: the server is not there. Every
                    // waiter fails now rather than at its timeout.
                    debug!(server = %this.server, error = %e, "DNS server unreachable");
                    this.pending().clear();
                }
            }
        }
    }

    async fn ask(&self, query: &[u8], timeout: Duration) -> Result<Vec<u8>, DnsError> {
        if query.len() < 12 {
            return Err(DnsError::Unreadable("query shorter than a DNS header".into()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut q = query.to_vec();
        let id = {
            let mut p = self.pending();
            let id = loop {
                let id: u16 = rand::random();
                if !p.contains_key(&id) {
                    break id;
                }
            };
            q[..2].copy_from_slice(&id.to_be_bytes());
            p.insert(id, (q.clone(), tx));
            id
        };
        let sock = &self.socks[usize::from(id) % self.socks.len()];
        let server = self.server;
        if let Err(source) = sock.send(&q).await {
            self.pending().remove(&id);
            return Err(DnsError::Upstream { server, source });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(mut answer)) => {
                answer[..2].copy_from_slice(&query[..2]);
                Ok(answer)
            }
            Ok(Err(_)) => Err(DnsError::Upstream {
                server,
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            }),
            Err(_) => {
                self.pending().remove(&id);
                Err(DnsError::Timeout {
                    server,
                    after: timeout,
                })
            }
        }
    }
}

impl DnsProxy {
    pub fn new(
        catalog: Arc<Catalog>,
        set: Arc<ProviderSet>,
        mark: u32,
        timeout: Duration,
        max_inflight: usize,
        own: Vec<SocketAddr>,
    ) -> Self {
        Self {
            catalog,
            set,
            mark,
            timeout,
            inflight: Arc::new(Limits::new((max_inflight / 4).max(1), max_inflight, 0)),
            own,
            forwarders: Default::default(),
        }
    }

    /// Read an answer; write its provider addresses into the kernel set. Ok: the answer may go
    /// to the workload. Err: it must not (the caller answers SERVFAIL).
    pub fn inspect(&self, answer: &[u8], asker: &Asker) -> Result<usize, DnsError> {
        let msg = Message::from_vec(answer).map_err(|e| DnsError::Unreadable(e.to_string()))?;
        if msg.message_type() != MessageType::Response {
            return Err(DnsError::Unreadable("not a response".into()));
        }
        let found = provider_addresses(&msg, &|n| self.catalog.dns_name_flags(n));
        if found.is_empty() {
            return Ok(0);
        }
        let mut new = 0;
        for f in &found {
            new += self
                .set
                .learn(&[f.ip], Duration::from_secs(f.ttl.into()), f.flags)
                .map_err(|e| DnsError::Learn(e.to_string()))?;
        }
        crate::metrics::get().dns_learned.inc_by(new as u64);
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        let addrs: Vec<String> = found.iter().map(|f| f.ip.to_string()).collect();
        if new > 0 {
            info!(
                names = ?names, addrs = ?addrs, new, pid = asker.pid, uid = asker.uid,
                comm = %asker.comm, "provider addresses learned from a workload's DNS answer"
            );
        } else {
            debug!(names = ?names, addrs = ?addrs, "provider addresses confirmed by a workload's DNS answer");
        }
        Ok(new)
    }

    /// One query over UDP to `server`: the answer as the workload may receive it.
    async fn exchange_udp(
        &self,
        query: &[u8],
        server: SocketAddr,
        asker: &Asker,
    ) -> Result<Vec<u8>, DnsError> {
        if self.own.contains(&server) {
            return Err(DnsError::Loop);
        }
        let answer = match self.forwarder(server) {
            Some(f) => f.ask(query, self.timeout).await?,
            None => self.ask_alone(query, server).await?,
        };
        self.inspect(&answer, asker)?;
        Ok(answer)
    }

    /// The pooled sockets for `server` (created on first use), or None past the pool's size.
    fn forwarder(&self, server: SocketAddr) -> Option<Arc<Forwarder>> {
        let mut pool = self.forwarders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = pool.get(&server) {
            return Some(f.clone());
        }
        if pool.len() >= MAX_FORWARDERS {
            return None;
        }
        match Forwarder::start(server, self.mark) {
            Ok(f) => {
                pool.insert(server, f.clone());
                Some(f)
            }
            Err(e) => {
                warn!(%server, error = %e, "cannot open DNS sockets to the server; one per query");
                None
            }
        }
    }

    /// A socket of its own for one query (past the pool's size).
    async fn ask_alone(&self, query: &[u8], server: SocketAddr) -> Result<Vec<u8>, DnsError> {
        let up = |source| DnsError::Upstream { server, source };
        let sock = marked_udp(server, self.mark).map_err(up)?;
        sock.send(query).await.map_err(up)?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
                .await
                .map_err(|_| DnsError::Timeout {
                    server,
                    after: self.timeout,
                })?
                .map_err(up)?;
            // The connected socket only hears `server`; another id or question is not ours.
            if answers(query, &buf[..n]) {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    /// Serve UDP queries arriving on `sock` (bound to `local`) until it fails. Each datagram's
    /// record (who sent it, to which server) comes from the egress program via `flows`; a
    /// datagram without one was not redirected here and is dropped.
    pub async fn serve_udp(
        self: Arc<Self>,
        sock: Arc<UdpSocket>,
        local: SocketAddr,
        flows: Arc<dyn UdpOrigDst>,
    ) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let (n, peer) = match sock.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, %local, "DNS socket receive failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let rec = match flows.get(ClientAddr(peer), ProxyAddr(local)) {
                Ok(Some(rec)) if rec.dns => rec,
                Ok(_) => {
                    count("no_record");
                    debug!(%peer, "DNS datagram without a redirect record: dropped");
                    continue;
                }
                Err(e) => {
                    count("no_record");
                    warn!(%peer, error = %e, "DNS flow lookup failed: query dropped");
                    continue;
                }
            };
            let permit = match self.inflight.admit(rec.cgroup_id) {
                Ok(p) => p,
                Err(e) => {
                    count("busy");
                    warn!(%peer, pid = rec.tgid, comm = %rec.comm, bound = %e, "too many DNS queries in flight: query dropped (the client retries)");
                    continue;
                }
            };
            let query = buf[..n].to_vec();
            let this = self.clone();
            let sock = sock.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let asker = Asker {
                    pid: rec.tgid,
                    uid: rec.uid,
                    comm: rec.comm.clone(),
                    cgroup_id: rec.cgroup_id,
                };
                let server = rec.orig_dst.0;
                let reply = match this.exchange_udp(&query, server, &asker).await {
                    Ok(answer) => {
                        count("answered");
                        Some(answer)
                    }
                    Err(e) => {
                        count(e.result());
                        warn!(%server, pid = asker.pid, comm = %asker.comm, error = %e, "DNS query failed closed: SERVFAIL");
                        servfail(&query)
                    }
                };
                if let Some(r) = reply
                    && let Err(e) = sock.send_to(&r, peer).await
                {
                    debug!(%peer, error = %e, "cannot return the DNS answer");
                }
            });
        }
    }

    /// DNS over TCP (RFC 7766: two-byte length, then the message), one query after another,
    /// until either side closes. Returns the number of queries answered.
    pub async fn serve_tcp(
        &self,
        mut client: TcpStream,
        server: OrigDstAddr,
        asker: &Asker,
        connect_timeout: Duration,
    ) -> Result<u64, DnsError> {
        let server = server.0;
        if self.own.contains(&server) {
            return Err(DnsError::Loop);
        }
        let up = |source| DnsError::Upstream { server, source };
        let mut upstream =
            crate::upstream::connect(OrigDstAddr(server), self.mark, connect_timeout)
                .await
                .map_err(|e| up(std::io::Error::other(e.to_string())))?;
        let mut served = 0;
        loop {
            let Some(query) = read_frame(&mut client, self.timeout * 2).await else {
                return Ok(served);
            };
            // The connection itself holds a place among the connection bounds; its queries,
            // one at a time, also count among the DNS ones.
            let _permit = match self.inflight.admit(asker.cgroup_id) {
                Ok(p) => p,
                Err(e) => {
                    count("busy");
                    warn!(%server, pid = asker.pid, bound = %e, "too many DNS queries in flight: SERVFAIL");
                    let sf = servfail(&query).ok_or(DnsError::Loop)?;
                    if client.write_all(&frame(&sf)).await.is_err() {
                        return Ok(served);
                    }
                    continue;
                }
            };
            upstream.write_all(&frame(&query)).await.map_err(up)?;
            let answer =
                read_frame(&mut upstream, self.timeout)
                    .await
                    .ok_or(DnsError::Timeout {
                        server,
                        after: self.timeout,
                    })?;
            let reply = match self.inspect(&answer, asker) {
                Ok(_) => {
                    count("answered");
                    answer
                }
                Err(e) => {
                    count(e.result());
                    warn!(%server, pid = asker.pid, comm = %asker.comm, error = %e, "DNS query failed closed: SERVFAIL");
                    servfail(&query).ok_or(e)?
                }
            };
            if client.write_all(&frame(&reply)).await.is_err() {
                return Ok(served);
            }
            served += 1;
        }
    }
}

/// Serve the UDP sockets on a thread of their own with a single-threaded runtime: a query's
/// receive, forward, answer and reply then never hop between threads (on a small machine
/// each hop is a wake-up that costs more than the work).
pub fn spawn_udp(
    proxy: Arc<DnsProxy>,
    sockets: Vec<(std::net::UdpSocket, SocketAddr)>,
    flows: Arc<dyn UdpOrigDst>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("gateway-dns".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for (std_sock, addr) in sockets {
                    match UdpSocket::from_std(std_sock) {
                        Ok(s) => tasks.push(tokio::spawn(proxy.clone().serve_udp(
                            Arc::new(s),
                            addr,
                            flows.clone(),
                        ))),
                        Err(e) => warn!(%addr, error = %e, "DNS socket unusable"),
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })?;
    Ok(())
}

fn count(result: &str) {
    crate::metrics::get()
        .dns_queries
        .get_or_create(&crate::metrics::ResultLabels {
            result: result.to_string(),
        })
        .inc();
}

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&(msg.len().min(MAX_MESSAGE) as u16).to_be_bytes());
    out.extend_from_slice(&msg[..msg.len().min(MAX_MESSAGE)]);
    out
}

/// One length-prefixed message, or None at EOF, on error or after `timeout`.
async fn read_frame(s: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(timeout, async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut msg).await.ok()?;
        Some(msg)
    })
    .await
    .ok()
    .flatten()
}

/// A UDP socket connected to `server`, carrying the bypass mark (so the programs leave it
/// alone), on an ephemeral port (a fresh random port per query, as resolvers do).
fn marked_udp(server: SocketAddr, mark: u32) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if server.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_mark(mark)?;
    s.set_nonblocking(true)?;
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    s.bind(&any.into())?;
    s.connect(&server.into())?;
    UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests;
