//! Where a redirected connection was going, and who opened it.
//!
//! One `OrigDst` trait with the BPF-map implementation (the `GW_FLOWS` map the sock_ops program
//! fills) and a mock for in-process tests (linkerd's MockOrigDst). A lookup deletes the entry:
//! each record is read once.

use std::{
    collections::HashMap as StdHashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Mutex,
};

use aya::maps::{HashMap, MapData, MapError};
use gateway_common::{AF_INET6, ConnInfo, FlowKey, is_v4_mapped};

/// The client end of an accepted connection (its address as the proxy sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The proxy end of an accepted connection (the listener address the client was sent to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyAddr(pub SocketAddr);

/// The address the client dialled before the redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrigDstAddr(pub SocketAddr);

impl fmt::Display for OrigDstAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the kernel recorded at connect() time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    pub orig_dst: OrigDstAddr,
    /// Whether the client socket was AF_INET6 (possibly dialling a v4-mapped address).
    pub v6_socket: bool,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    /// The destination's provider-set bits at connect() time (`ADDR_*`; 0 for DNS to a
    /// non-provider server).
    pub addr_flags: u8,
    /// A DNS query redirected to the gateway's DNS service (TCP or UDP port 53).
    pub dns: bool,
}

impl ConnRecord {
    /// TLS with a server name not of a provider may be spliced here (a shared CDN front).
    pub fn shared(&self) -> bool {
        self.addr_flags & gateway_common::ADDR_SHARED != 0
    }

    pub fn from_info(info: &ConnInfo) -> Self {
        let ip = words_to_ip(&info.orig_ip);
        let end = info
            .comm
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(info.comm.len());
        Self {
            orig_dst: OrigDstAddr(SocketAddr::new(ip, info.orig_port)),
            v6_socket: info.sock_family == AF_INET6,
            pid: info.pid,
            tgid: info.tgid,
            uid: info.uid,
            gid: info.gid,
            cgroup_id: info.cgroup_id,
            comm: String::from_utf8_lossy(&info.comm[..end]).into_owned(),
            addr_flags: (info.flags & gateway_common::CONN_ADDR_MASK) as u8,
            dns: info.flags & gateway_common::CONN_F_DNS != 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrigDstError {
    #[error("flow table lookup failed: {0}")]
    Map(#[from] MapError),
}

pub trait OrigDst: Send + Sync + 'static {
    /// Take (look up and delete) the record of the connection `client` → `proxy`.
    fn take(
        &self,
        client: ClientAddr,
        proxy: ProxyAddr,
    ) -> Result<Option<ConnRecord>, OrigDstError>;
}

/// Unmap `::ffff:a.b.c.d` to `a.b.c.d`; everything else unchanged.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// An address in the kernel's form: network-order words, IPv4 as v4-mapped.
pub fn ip_to_words(ip: IpAddr) -> [u32; 4] {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let o = v6.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]])
    })
}

pub fn words_to_ip(w: &[u32; 4]) -> IpAddr {
    let mut o = [0u8; 16];
    for (i, word) in w.iter().enumerate() {
        o[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    if is_v4_mapped(w) {
        IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(o))
    }
}

pub fn flow_key(client: ClientAddr, proxy: ProxyAddr) -> FlowKey {
    FlowKey {
        src_ip: ip_to_words(client.0.ip()),
        dst_ip: ip_to_words(proxy.0.ip()),
        src_port: client.0.port(),
        dst_port: proxy.0.port(),
        _pad: 0,
    }
}

fn normalized_key(client: ClientAddr, proxy: ProxyAddr) -> FlowKey {
    flow_key(
        ClientAddr(normalize(client.0)),
        ProxyAddr(normalize(proxy.0)),
    )
}

/// One flow map's record for `key`, if any.
fn lookup(
    map: &HashMap<MapData, FlowKey, ConnInfo>,
    key: &FlowKey,
) -> Result<Option<ConnRecord>, OrigDstError> {
    match map.get(key, 0) {
        Ok(info) => Ok(Some(ConnRecord::from_info(&info))),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The `GW_FLOWS` map.
pub struct BpfOrigDst {
    flows: Mutex<HashMap<MapData, FlowKey, ConnInfo>>,
}

impl BpfOrigDst {
    pub fn new(flows: HashMap<MapData, FlowKey, ConnInfo>) -> Self {
        Self {
            flows: Mutex::new(flows),
        }
    }
}

impl OrigDst for BpfOrigDst {
    fn take(
        &self,
        client: ClientAddr,
        proxy: ProxyAddr,
    ) -> Result<Option<ConnRecord>, OrigDstError> {
        let key = normalized_key(client, proxy);
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        let rec = lookup(&flows, &key)?;
        if rec.is_some() {
            // A failed delete only leaves the entry to LRU eviction; the record is good.
            let _ = flows.remove(&key);
        }
        Ok(rec)
    }
}

/// The `GW_UDP_FLOWS` map: who sent a redirected DNS datagram, and to which server. Read,
/// not taken: a socket sends many queries (the egress program rewrites the entry each time).
pub struct BpfUdpFlows {
    flows: HashMap<MapData, FlowKey, ConnInfo>,
}

impl BpfUdpFlows {
    pub fn new(flows: HashMap<MapData, FlowKey, ConnInfo>) -> Self {
        Self { flows }
    }
}

/// Where a redirected datagram was going; a mock in tests.
pub trait UdpOrigDst: Send + Sync + 'static {
    fn get(&self, client: ClientAddr, proxy: ProxyAddr)
    -> Result<Option<ConnRecord>, OrigDstError>;
}

impl UdpOrigDst for BpfUdpFlows {
    fn get(
        &self,
        client: ClientAddr,
        proxy: ProxyAddr,
    ) -> Result<Option<ConnRecord>, OrigDstError> {
        let key = flow_key(
            ClientAddr(normalize(client.0)),
            ProxyAddr(normalize(proxy.0)),
        );
        match self.flows.get(&key, 0) {
            Ok(info) => Ok(Some(ConnRecord::from_info(&info))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl UdpOrigDst for MockOrigDst {
    fn get(
        &self,
        client: ClientAddr,
        _proxy: ProxyAddr,
    ) -> Result<Option<ConnRecord>, OrigDstError> {
        Ok(self.records().get(&normalize(client.0)).cloned())
    }
}

/// In-process tests: records inserted by the test, keyed by client address.
#[derive(Default)]
pub struct MockOrigDst {
    records: Mutex<StdHashMap<SocketAddr, ConnRecord>>,
}

impl MockOrigDst {
    pub fn insert(&self, client: SocketAddr, record: ConnRecord) {
        self.records().insert(normalize(client), record);
    }

    fn records(&self) -> std::sync::MutexGuard<'_, StdHashMap<SocketAddr, ConnRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OrigDst for MockOrigDst {
    fn take(
        &self,
        client: ClientAddr,
        _proxy: ProxyAddr,
    ) -> Result<Option<ConnRecord>, OrigDstError> {
        Ok(self.records().remove(&normalize(client.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_v4_and_v6() {
        for ip in ["127.10.0.1", "::1", "2001:db8::5", "10.0.0.255"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(words_to_ip(&ip_to_words(ip)), ip);
        }
        assert_eq!(
            ip_to_words("127.10.0.1".parse().unwrap()),
            gateway_common::v4_mapped(u32::from_ne_bytes([127, 10, 0, 1]))
        );
    }

    #[test]
    fn normalize_unmaps_v4_mapped_peers() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        assert_eq!(
            normalize(a),
            "127.0.0.1:4000".parse::<SocketAddr>().unwrap()
        );
        let b: SocketAddr = "[::1]:4000".parse().unwrap();
        assert_eq!(normalize(b), b);
    }

    #[test]
    fn record_decodes_comm_and_destination() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let info = ConnInfo {
            orig_ip: ip_to_words("127.10.0.1".parse().unwrap()),
            orig_port: 443,
            sock_family: gateway_common::AF_INET,
            pid: 10,
            tgid: 9,
            uid: 1000,
            gid: 100,
            flags: gateway_common::CONN_F_DNS | gateway_common::ADDR_PROVIDER as u32,
            cgroup_id: 77,
            comm,
        };
        let r = ConnRecord::from_info(&info);
        assert_eq!(
            r.orig_dst.0,
            "127.10.0.1:443".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(r.comm, "curl");
        assert!(!r.v6_socket);
        assert!(r.dns);
        assert_eq!(r.addr_flags, gateway_common::ADDR_PROVIDER);
        assert!(!r.shared());
    }

    #[test]
    fn mock_takes_once() {
        let m = MockOrigDst::default();
        let client: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let rec = ConnRecord {
            orig_dst: OrigDstAddr("127.10.0.1:443".parse().unwrap()),
            v6_socket: false,
            pid: 1,
            tgid: 1,
            uid: 0,
            gid: 0,
            cgroup_id: 1,
            comm: "x".into(),
            addr_flags: gateway_common::ADDR_PROVIDER,
            dns: false,
        };
        m.insert(client, rec.clone());
        let proxy = ProxyAddr("127.0.0.1:15001".parse().unwrap());
        assert_eq!(m.take(ClientAddr(client), proxy).unwrap(), Some(rec));
        assert_eq!(m.take(ClientAddr(client), proxy).unwrap(), None);
    }
}
