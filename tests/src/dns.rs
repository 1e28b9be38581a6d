//! Fake DNS servers. `FakeDns`: loopback UDP, A records only, from a table the test changes,
//! NXDOMAIN for names it does not know, and empty answers for other types.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

type Table = HashMap<String, (Vec<Ipv4Addr>, u32)>;

pub struct FakeDns {
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeDns {
    pub fn start() -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap())
    }

    /// On a given address (e.g. a loopback address's port 53, where resolv.conf can name it).
    pub fn start_at(at: SocketAddr) -> Self {
        let sock = UdpSocket::bind(at).expect("bind fake dns");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let table: Arc<Mutex<Table>> = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, q, s) = (table.clone(), queries.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                if let Some(resp) = answer(&buf[..n], &t.lock().unwrap()) {
                    let _ = sock.send_to(&resp, peer);
                }
            }
        });
        Self {
            addr,
            table,
            queries,
            stop,
        }
    }

    pub fn set(&self, name: &str, ips: &[Ipv4Addr], ttl: u32) {
        self.table
            .lock()
            .unwrap()
            .insert(name.to_string(), (ips.to_vec(), ttl));
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(q: &[u8], table: &Table) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // Question name.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let qend = i + 4;
    let question = q.get(12..qend)?;
    let name = labels.join(".");
    let entry = table.get(&name);
    let answers: Vec<(Ipv4Addr, u32)> = match (entry, qtype) {
        (Some((ips, ttl)), 1) => ips.iter().map(|ip| (*ip, *ttl)).collect(),
        _ => Vec::new(),
    };
    let rcode: u8 = if entry.is_none() { 3 } else { 0 }; // NXDOMAIN for unknown names
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&q[0..2]); // id
    r.push(0x81); // QR, RD
    r.push(0x80 | rcode); // RA, rcode
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(question);
    for (ip, ttl) in answers {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

/// A record a [`DnsServer`] answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rr {
    A(Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    /// An alias: the answer carries this CNAME and then the target's records of the asked type
    /// (the target looked up in the same table, chains followed up to 8 hops).
    Cname(String),
}

/// One query a [`DnsServer`] received.
#[derive(Debug, Clone)]
pub struct Query {
    pub name: String,
    pub qtype: u16,
    pub tcp: bool,
    pub peer: SocketAddr,
}

type RrTable = HashMap<String, Vec<Rr>>;

/// A fake authoritative-and-recursive DNS server on any address (UDP and TCP on the same
/// port): A, AAAA and CNAME chains from a table the test changes, NXDOMAIN for names it does
/// not know, an empty NOERROR answer for a known name without records of the asked type. Its
/// sockets are created by the calling thread, so a thread inside a network namespace
/// ([`crate::netns::TestNet::within`]) gets a server in that namespace.
pub struct DnsServer {
    pub addr: SocketAddr,
    table: Arc<Mutex<RrTable>>,
    queries: Arc<Mutex<Vec<Query>>>,
    ttl: Arc<std::sync::atomic::AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    /// Bind UDP and TCP on `addr` (in the calling thread's network namespace).
    pub fn start(addr: SocketAddr) -> Self {
        let udp = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("fake dns udp {addr}: {e}"));
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("fake dns tcp {addr}: {e}"));
        tcp.set_nonblocking(true).unwrap();
        let table: Arc<Mutex<RrTable>> = Arc::default();
        let queries: Arc<Mutex<Vec<Query>>> = Arc::default();
        let ttl = Arc::new(std::sync::atomic::AtomicU32::new(60));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (t, q, ttl, s) = (table.clone(), queries.clone(), ttl.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !s.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    let ttl = ttl.load(Ordering::Relaxed);
                    if let Some((resp, name, qtype)) = answer_rr(&buf[..n], &t.lock().unwrap(), ttl)
                    {
                        q.lock().unwrap().push(Query {
                            name,
                            qtype,
                            tcp: false,
                            peer,
                        });
                        let _ = udp.send_to(&resp, peer);
                    }
                }
            });
        }
        {
            let (t, q, ttl, s) = (table.clone(), queries.clone(), ttl.clone(), stop.clone());
            std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let Ok((mut conn, peer)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let (t, q, ttl) = (t.clone(), q.clone(), ttl.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read as _, Write as _};
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                        loop {
                            let mut len = [0u8; 2];
                            if conn.read_exact(&mut len).is_err() {
                                return;
                            }
                            let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                            if conn.read_exact(&mut msg).is_err() {
                                return;
                            }
                            let ttl = ttl.load(Ordering::Relaxed);
                            let Some((resp, name, qtype)) =
                                answer_rr(&msg, &t.lock().unwrap(), ttl)
                            else {
                                return;
                            };
                            q.lock().unwrap().push(Query {
                                name,
                                qtype,
                                tcp: true,
                                peer,
                            });
                            let mut out = (resp.len() as u16).to_be_bytes().to_vec();
                            out.extend_from_slice(&resp);
                            if conn.write_all(&out).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        Self {
            addr,
            table,
            queries,
            ttl,
            stop,
        }
    }

    /// Replace the records of `name` (lower case, no trailing dot).
    pub fn set(&self, name: &str, rrs: &[Rr]) {
        self.table
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), rrs.to_vec());
    }

    /// The TTL of every answer record from now on.
    pub fn set_ttl(&self, ttl: u32) {
        self.ttl.store(ttl, Ordering::Relaxed);
    }

    /// Every query answered so far.
    pub fn queries(&self) -> Vec<Query> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn put_name(r: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        r.push(label.len() as u8);
        r.extend_from_slice(label.as_bytes());
    }
    r.push(0);
}

/// The answer to `q` (and the question's name and type), or None for a malformed query.
fn answer_rr(q: &[u8], table: &RrTable, ttl: u32) -> Option<(Vec<u8>, String, u16)> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let qend = i + 4;
    let question = q.get(12..qend)?;
    let name = labels.join(".");
    // Walk the chain: CNAMEs first, then the final name's records of the asked type.
    let mut answers: Vec<(String, u16, Vec<u8>)> = Vec::new();
    let mut cur = name.clone();
    let mut known = table.contains_key(&name);
    for _ in 0..8 {
        let Some(rrs) = table.get(&cur) else { break };
        known = true;
        if let Some(target) = rrs.iter().find_map(|r| match r {
            Rr::Cname(t) => Some(t.to_ascii_lowercase()),
            _ => None,
        }) {
            let mut rdata = Vec::new();
            put_name(&mut rdata, &target);
            answers.push((cur.clone(), 5, rdata));
            if qtype == 5 {
                break;
            }
            cur = target;
            continue;
        }
        for r in rrs {
            match (r, qtype) {
                (Rr::A(ip), 1) => answers.push((cur.clone(), 1, ip.octets().to_vec())),
                (Rr::Aaaa(ip), 28) => answers.push((cur.clone(), 28, ip.octets().to_vec())),
                _ => {}
            }
        }
        break;
    }
    let rcode: u8 = if known { 0 } else { 3 };
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&q[0..2]);
    r.push(0x81 | (q[2] & 0x01)); // QR, RD copied
    r.push(0x80 | rcode); // RA
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(question);
    for (owner, ty, rdata) in answers {
        put_name(&mut r, &owner);
        r.extend_from_slice(&ty.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    Some((r, name, qtype))
}
