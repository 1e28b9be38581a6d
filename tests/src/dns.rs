//! A fake DNS server on loopback (UDP) answering A queries from a table the test changes,
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
