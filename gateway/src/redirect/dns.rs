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
    origdst::{ClientAddr, ConnRecord, OrigDstAddr, ProxyAddr, UdpOrigDst},
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
    query.len() >= 2 && answers_as(query, u16::from_be_bytes([query[0], query[1]]), answer)
}

/// `answers` for `query` sent under the id `id`.
fn answers_as(query: &[u8], id: u16, answer: &[u8]) -> bool {
    let qlen = question_len(query).unwrap_or(0);
    answer.len() >= 12 + qlen
        && answer[..2] == id.to_be_bytes()
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

/// A workload waiting on the proxy's UDP socket: where its answer goes.
struct Udp {
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    /// Its place among the queries in flight, given back when the answer (or SERVFAIL) goes.
    _permit: crate::limits::Admitted,
}

impl Udp {
    fn send(&self, msg: Vec<u8>) {
        match self.sock.try_send_to(&msg, self.peer) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let (sock, peer) = (self.sock.clone(), self.peer);
                tokio::spawn(async move {
                    let _ = sock.send_to(&msg, peer).await;
                });
            }
            Err(e) => debug!(peer = %self.peer, error = %e, "cannot return the DNS answer"),
        }
    }
}

/// Where a forwarded query's answer goes.
enum Reply {
    /// Read, then straight back to the workload, by the reader that received it.
    Udp(Udp),
    /// To a task waiting for it (`Forwarder::ask`, in tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Waiter(tokio::sync::oneshot::Sender<Vec<u8>>),
}

struct Pending {
    /// The query as the workload sent it (its own id): the answer gets that id back, and its
    /// question must match.
    query: Vec<u8>,
    reply: Reply,
    asker: ConnRecord,
    deadline: tokio::time::Instant,
}

/// Pooled upstream sockets for one server: each query gets a fresh random id (the client's is
/// put back on the answer); one reader per socket hands each answer on; a sweeper answers
/// SERVFAIL for queries the server left unanswered.
struct Forwarder {
    server: SocketAddr,
    socks: Vec<Arc<UdpSocket>>,
    timeout: Duration,
    pending: std::sync::Mutex<HashMap<u16, Pending>>,
    proxy: std::sync::Weak<DnsProxy>,
}

impl Forwarder {
    fn start(
        server: SocketAddr,
        mark: u32,
        timeout: Duration,
        proxy: std::sync::Weak<DnsProxy>,
    ) -> std::io::Result<Arc<Self>> {
        let socks = (0..SOCKETS_PER_SERVER)
            .map(|_| marked_udp(server, mark).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        let f = Arc::new(Self {
            server,
            socks,
            timeout,
            pending: Default::default(),
            proxy,
        });
        for s in &f.socks {
            tokio::spawn(Self::read(Arc::downgrade(&f), s.clone()));
        }
        tokio::spawn(Self::sweep(Arc::downgrade(&f)));
        Ok(f)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand `p` its answer (with the client's id back on it), or why none will come.
    fn settle(&self, p: Pending, answer: Result<&mut [u8], DnsError>) {
        let answer = answer.map(|a| {
            a[..2].copy_from_slice(&p.query[..2]);
            &*a
        });
        match p.reply {
            Reply::Waiter(tx) => {
                if let Ok(a) = answer {
                    let _ = tx.send(a.to_vec());
                }
            }
            Reply::Udp(to) => {
                if let Some(proxy) = self.proxy.upgrade()
                    && let Some(r) = proxy.reply_for(answer, &p.query, &p.asker, self.server)
                {
                    to.send(r);
                }
            }
        }
    }

    fn unreachable(&self, kind: std::io::ErrorKind) -> DnsError {
        DnsError::Upstream {
            server: self.server,
            source: kind.into(),
        }
    }

    async fn read(this: std::sync::Weak<Self>, sock: Arc<UdpSocket>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let r = sock.recv(&mut buf).await;
            let Some(this) = this.upgrade() else { return };
            match r {
                Ok(n) if n >= 12 => {
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    let p = {
                        let mut pending = this.pending();
                        // Our id and the same question: anything else is not an answer to us.
                        let ours = pending
                            .get(&id)
                            .is_some_and(|p| answers_as(&p.query, id, &buf[..n]));
                        if ours { pending.remove(&id) } else { None }
                    };
                    if let Some(p) = p {
                        this.settle(p, Ok(&mut buf[..n]));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // ICMP unreachable on a connected socket: the server is not there. Every
                    // query waiting on it fails now rather than at its timeout.
                    debug!(server = %this.server, error = %e, "DNS server unreachable");
                    let all: Vec<Pending> = this.pending().drain().map(|(_, p)| p).collect();
                    for p in all {
                        this.settle(p, Err(this.unreachable(e.kind())));
                    }
                }
            }
        }
    }

    async fn sweep(this: std::sync::Weak<Self>) {
        let tick = {
            let Some(f) = this.upgrade() else { return };
            (f.timeout / 8).clamp(Duration::from_millis(20), Duration::from_millis(500))
        };
        loop {
            tokio::time::sleep(tick).await;
            let Some(this) = this.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let expired: Vec<Pending> = {
                let mut p = this.pending();
                let ids: Vec<u16> = p
                    .iter()
                    .filter(|(_, q)| q.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                ids.iter().filter_map(|id| p.remove(id)).collect()
            };
            for p in expired {
                this.settle(
                    p,
                    Err(DnsError::Timeout {
                        server: this.server,
                        after: this.timeout,
                    }),
                );
            }
        }
    }

    /// Send `query` under a fresh id; its answer goes to `reply`.
    fn forward(
        self: &Arc<Self>,
        query: Vec<u8>,
        reply: Reply,
        asker: ConnRecord,
    ) -> Result<(), DnsError> {
        if query.len() < 12 {
            return Err(DnsError::Unreadable(
                "query shorter than a DNS header".into(),
            ));
        }
        let mut q = query.clone();
        let id = {
            let mut p = self.pending();
            let id = loop {
                let id: u16 = rand::random();
                if !p.contains_key(&id) {
                    break id;
                }
            };
            q[..2].copy_from_slice(&id.to_be_bytes());
            p.insert(
                id,
                Pending {
                    query,
                    reply,
                    asker,
                    deadline: tokio::time::Instant::now() + self.timeout,
                },
            );
            id
        };
        let sock = &self.socks[usize::from(id) % self.socks.len()];
        match sock.try_send(&q) {
            Ok(_) => Ok(()),
            // Not known writable yet (a new socket) or a full buffer: wait for it in a task.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let (this, sock) = (self.clone(), sock.clone());
                tokio::spawn(async move {
                    if let Err(e) = sock.send(&q).await {
                        let p = this.pending().remove(&id);
                        if let Some(p) = p {
                            this.settle(p, Err(this.unreachable(e.kind())));
                        }
                    }
                });
                Ok(())
            }
            Err(source) => {
                // The server unreachable: this query fails now.
                self.pending().remove(&id);
                Err(DnsError::Upstream {
                    server: self.server,
                    source,
                })
            }
        }
    }

    /// Forward `query` and wait for its answer (the client's id put back).
    #[cfg(test)]
    async fn ask(self: &Arc<Self>, query: &[u8], asker: &ConnRecord) -> Result<Vec<u8>, DnsError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.forward(query.to_vec(), Reply::Waiter(tx), asker.clone())?;
        rx.await.map_err(|_| DnsError::Timeout {
            server: self.server,
            after: self.timeout,
        })
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
    pub fn inspect(&self, answer: &[u8], asker: &ConnRecord) -> Result<usize, DnsError> {
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
                names = ?names, addrs = ?addrs, new, pid = asker.tgid, uid = asker.uid,
                comm = %asker.comm, "provider addresses learned from a workload's DNS answer"
            );
        } else {
            debug!(names = ?names, addrs = ?addrs, "provider addresses confirmed by a workload's DNS answer");
        }
        Ok(new)
    }

    /// One query over UDP to `server`: the answer as the workload may receive it (the path
    /// `serve_udp` takes, awaited; for tests).
    #[cfg(test)]
    async fn exchange_udp(
        self: &Arc<Self>,
        query: &[u8],
        server: SocketAddr,
        asker: &ConnRecord,
    ) -> Result<Vec<u8>, DnsError> {
        if self.own.contains(&server) {
            return Err(DnsError::Loop);
        }
        let answer = match self.forwarder(server) {
            Some(f) => f.ask(query, asker).await?,
            None => self.ask_alone(query, server).await?,
        };
        self.inspect(&answer, asker)?;
        Ok(answer)
    }

    /// What the workload gets for its query: the answer, when it could be read and its
    /// provider addresses written; SERVFAIL (counted, logged) for any other outcome. The one
    /// place every path (UDP pooled or alone, TCP) turns an exchange into a reply.
    fn reply_for(
        &self,
        answer: Result<&[u8], DnsError>,
        query: &[u8],
        asker: &ConnRecord,
        server: SocketAddr,
    ) -> Option<Vec<u8>> {
        match answer.and_then(|a| self.inspect(a, asker).map(|_| a)) {
            Ok(a) => {
                count("answered");
                Some(a.to_vec())
            }
            Err(e) => {
                count(e.result());
                warn!(%server, pid = asker.tgid, comm = %asker.comm, error = %e, "DNS query failed closed: SERVFAIL");
                servfail(query)
            }
        }
    }

    /// The pooled sockets for `server` (created on first use), or None past the pool's size.
    fn forwarder(self: &Arc<Self>, server: SocketAddr) -> Option<Arc<Forwarder>> {
        let mut pool = self.forwarders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = pool.get(&server) {
            return Some(f.clone());
        }
        if pool.len() >= MAX_FORWARDERS {
            return None;
        }
        match Forwarder::start(server, self.mark, self.timeout, Arc::downgrade(self)) {
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
            let server = rec.orig_dst.0;
            let asker = rec;
            let to = Udp {
                sock: sock.clone(),
                peer,
                _permit: permit,
            };
            let query = &buf[..n];
            if self.own.contains(&server) {
                if let Some(r) = self.reply_for(Err(DnsError::Loop), query, &asker, server) {
                    to.send(r);
                }
                continue;
            }
            match self.forwarder(server) {
                // The common path: forwarded here, answered by the reader that receives it.
                Some(f) => {
                    if let Err(e) = f.forward(query.to_vec(), Reply::Udp(to), asker.clone())
                        && let Some(r) = self.reply_for(Err(e), query, &asker, server)
                    {
                        let _ = sock.try_send_to(&r, peer);
                    }
                }
                // Past the pool's size: a socket and a task of its own.
                None => {
                    let (this, query) = (self.clone(), query.to_vec());
                    tokio::spawn(async move {
                        let reply = match this.ask_alone(&query, server).await {
                            Ok(a) => this.reply_for(Ok(&a), &query, &asker, server),
                            Err(e) => this.reply_for(Err(e), &query, &asker, server),
                        };
                        if let Some(r) = reply {
                            to.send(r);
                        }
                    });
                }
            }
        }
    }

    /// DNS over TCP (RFC 7766: two-byte length, then the message), one query after another,
    /// until either side closes. Returns the number of queries answered.
    pub async fn serve_tcp(
        &self,
        mut client: TcpStream,
        asker: &ConnRecord,
        connect_timeout: Duration,
    ) -> Result<u64, DnsError> {
        let server = asker.orig_dst.0;
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
                    warn!(%server, pid = asker.tgid, bound = %e, "too many DNS queries in flight: SERVFAIL");
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
            let reply = self
                .reply_for(Ok(&answer), &query, asker, server)
                .ok_or_else(|| DnsError::Unreadable("the query is not a DNS message".into()))?;
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
