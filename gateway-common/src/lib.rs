//! Types and names shared by the eBPF programs (`gateway-ebpf`) and the daemon (`gateway`).
//!
//! Every type that crosses the kernel boundary is written once, here: `#[repr(C)]`, explicit
//! padding, and the byte order of each field stated beside it. With the `user` feature the types
//! implement `aya::Pod` so the daemon can read and write the maps.
#![no_std]

/// Program names (the function names in `gateway-ebpf`, which are the ELF symbols aya looks up).
pub mod programs {
    pub const CONNECT4: &str = "gw_connect4";
    pub const CONNECT6: &str = "gw_connect6";
    pub const SENDMSG4: &str = "gw_sendmsg4";
    pub const SENDMSG6: &str = "gw_sendmsg6";
    pub const GETPEERNAME4: &str = "gw_getpeername4";
    pub const GETPEERNAME6: &str = "gw_getpeername6";
    pub const RECVMSG4: &str = "gw_recvmsg4";
    pub const RECVMSG6: &str = "gw_recvmsg6";
    pub const SOCK_OPS: &str = "gw_sock_ops";
    /// cgroup_skb egress: publishes a redirected DNS datagram under its 4-tuple.
    pub const EGRESS: &str = "gw_egress";
    /// sk_skb stream verdict on `maps::RELAY`: a spliced connection relayed in the kernel. Not
    /// attached to any cgroup, only to the gateway's own (unpinned) sockhash.
    pub const RELAY: &str = "gw_relay";
    /// Every cgroup `sock_addr` program, in attach order.
    pub const SOCK_ADDR: [&str; 8] = [
        CONNECT4,
        CONNECT6,
        SENDMSG4,
        SENDMSG6,
        RECVMSG4,
        RECVMSG6,
        GETPEERNAME4,
        GETPEERNAME6,
    ];
}

/// Map names (the statics in `gateway-ebpf`). All of them are pinned by the daemon.
pub mod maps {
    /// `LpmTrie<[u8; 4], u8>`: provider IPv4 CIDRs; the value is `ADDR_*` bits.
    pub const PROVIDERS_V4: &str = "GW_PROVIDERS_V4";
    /// `LpmTrie<[u8; 16], u8>`: provider IPv6 CIDRs; the value is `ADDR_*` bits.
    pub const PROVIDERS_V6: &str = "GW_PROVIDERS_V6";
    /// `HashMap<u16, u8>`: redirected destination ports, host byte order.
    pub const PORTS: &str = "GW_PORTS";
    /// `Array<ProxyConfig>` with one entry: where to send redirected connects.
    pub const PROXY: &str = "GW_PROXY";
    /// `LruHashMap<u64, ConnInfo>`: socket cookie of a redirected client socket → its record.
    pub const SOCKETS: &str = "GW_SOCKETS";
    /// `LruHashMap<FlowKey, ConnInfo>`: the client's 4-tuple as the proxy sees it → record.
    pub const FLOWS: &str = "GW_FLOWS";
    /// `LruHashMap<FlowKey, ConnInfo>`: a redirected DNS datagram's 4-tuple as the proxy's UDP
    /// socket sees it → the record of the socket that sent it (kept: a socket sends many).
    pub const UDP_FLOWS: &str = "GW_UDP_FLOWS";
    /// `Array<Meta>` with one entry: which object and which cgroup the pins belong to.
    pub const META: &str = "GW_META";
    /// `SockHash<u64>`: a relayed socket under its *peer's* cookie (where the peer's bytes go).
    /// Not pinned (like the two below): the daemon's own, empty at each start.
    pub const RELAY_TARGETS: &str = "GW_RELAY_TARGETS";
    /// `SockHash<u64>`: a relayed socket under its own cookie; `programs::RELAY` is attached here.
    pub const RELAY: &str = "GW_RELAY";
    /// `HashMap<u64, u64>`: socket cookie → bytes the relay handed on from that socket.
    pub const RELAY_COUNTS: &str = "GW_RELAY_COUNTS";
    /// aya-log's ring buffer (declared by `aya-log-ebpf`).
    pub const LOGS: &str = "AYA_LOGS";
    /// Every map the object declares, for pinning.
    pub const ALL: [&str; 9] = [
        PROVIDERS_V4,
        PROVIDERS_V6,
        PORTS,
        PROXY,
        SOCKETS,
        FLOWS,
        UDP_FLOWS,
        META,
        LOGS,
    ];
}

pub const MAX_CIDRS: u32 = 65_536;
pub const MAX_PORTS: u32 = 64;
pub const MAX_SOCKETS: u32 = 65_536;
pub const MAX_FLOWS: u32 = 65_536;
pub const MAX_UDP_FLOWS: u32 = 16_384;
/// Sockets the kernel relay can hold at once (two per spliced connection); beyond it a spliced
/// connection is relayed by splice(2).
pub const MAX_RELAYED: u32 = 65_536;

/// The DNS port: TCP and UDP to it, from the attached cgroup, go through the gateway.
pub const DNS_PORT: u16 = 53;

/// Provider-set value bits (`GW_PROVIDERS_V4/V6`).
/// The address belongs to a provider: every connection to it is intercepted or refused.
pub const ADDR_PROVIDER: u8 = 1;
/// Every provider claiming the address shares it with unrelated sites (a CDN front): TLS with
/// another server name is spliced there instead of refused.
pub const ADDR_SHARED: u8 = 2;

/// `ConnInfo::flags` bits.
/// The destination was a provider address (the `ADDR_*` bits are in the low byte).
pub const CONN_ADDR_MASK: u32 = 0xff;
/// A DNS query (TCP or UDP port 53) redirected to the gateway's DNS proxy.
pub const CONN_F_DNS: u32 = 0x100;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `ProxyConfig::flags`: a v6 listener exists (pure IPv6 dials go to `v6_addr`).
pub const PROXY_F_V6: u32 = 1;
/// `ProxyConfig::flags`: the workloads' DNS goes through the gateway (learning provider
/// addresses from the answers they receive).
pub const PROXY_F_DNS: u32 = 2;

/// Where redirected connects go, and which sockets to leave alone. One entry, index 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// IPv4 listener address, network byte order (as `bpf_sock_addr.user_ip4`).
    pub v4_addr: u32,
    /// IPv6 listener address, network byte order per word (as `bpf_sock_addr.user_ip6`).
    pub v6_addr: [u32; 4],
    /// IPv4 listener port, host byte order.
    pub v4_port: u16,
    /// IPv6 listener port, host byte order.
    pub v6_port: u16,
    /// Together with `bypass_cgroup`: sockets with this `SO_MARK` (the gateway's own upstream
    /// sockets) are never touched. Host byte order. 0 exempts nothing.
    pub bypass_mark: u32,
    /// `PROXY_F_*` bits.
    pub flags: u32,
    /// The gateway's own cgroup v2 id: only a socket carrying the mark *and* opened from this
    /// cgroup is exempt (a process that inherits a dead daemon's pid, or sets the mark, is not).
    /// Host byte order. 0 exempts nothing.
    pub bypass_cgroup: u64,
}

/// What the programs know about a redirected connection, from the `connect()` call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Original destination address, network byte order per word; IPv4 destinations are
    /// stored in their v4-mapped form `::ffff:a.b.c.d`.
    pub orig_ip: [u32; 4],
    /// Original destination port, host byte order.
    pub orig_port: u16,
    /// Family of the socket that dialled (`AF_INET` or `AF_INET6`), host byte order.
    pub sock_family: u16,
    /// Thread id (kernel pid) of the caller, host byte order.
    pub pid: u32,
    /// Thread-group id (userspace pid) of the caller, host byte order.
    pub tgid: u32,
    /// Real uid / gid of the caller, host byte order.
    pub uid: u32,
    pub gid: u32,
    /// `CONN_*` bits: the destination's `ADDR_*` bits, `CONN_F_DNS`. Host byte order.
    pub flags: u32,
    /// cgroup v2 id of the caller (the inode number of its cgroup directory), host byte order.
    pub cgroup_id: u64,
    /// `comm` of the calling thread, NUL padded.
    pub comm: [u8; 16],
}

/// A TCP connection as the proxy's `accept()` sees it: client address and port, proxy address
/// and port. IPv4 addresses in v4-mapped form.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client (source) address, network byte order per word.
    pub src_ip: [u32; 4],
    /// Proxy (destination after rewrite) address, network byte order per word.
    pub dst_ip: [u32; 4],
    /// Client port, host byte order.
    pub src_port: u16,
    /// Proxy port, host byte order.
    pub dst_port: u16,
    pub _pad: u32,
}

/// Identifies what a set of pins belongs to, so a restarted daemon adopts only its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// SHA-256 of the eBPF object the pinned programs were loaded from.
    pub object_sha256: [u8; 32],
    /// cgroup v2 id the links are attached to, host byte order.
    pub cgroup_id: u64,
    /// 1 once written by a daemon.
    pub valid: u32,
    pub _pad: u32,
}

/// The v4-mapped form of an IPv4 address given in network byte order (as the kernel stores it).
#[inline(always)]
pub const fn v4_mapped(ip_be: u32) -> [u32; 4] {
    // 0x0000ffff in network byte order is the bytes 00 00 ff ff.
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), ip_be]
}

/// Whether a v6 address (network byte order words) is v4-mapped.
#[inline(always)]
pub const fn is_v4_mapped(ip: &[u32; 4]) -> bool {
    ip[0] == 0 && ip[1] == 0 && ip[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and arrays of integers, with
    // every padding byte spelled out as a field, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::ProxyConfig {}
    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Meta {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(
            core::mem::size_of::<ProxyConfig>(),
            4 + 16 + 2 + 2 + 4 + 4 + 8
        );
        assert_eq!(
            core::mem::size_of::<ConnInfo>(),
            16 + 2 + 2 + 4 * 5 + 8 + 16
        );
        assert_eq!(core::mem::size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 4);
        assert_eq!(core::mem::size_of::<Meta>(), 32 + 8 + 4 + 4);
    }

    #[test]
    fn v4_mapped_round_trip() {
        let ip = u32::from_ne_bytes([127, 10, 0, 1]);
        let m = v4_mapped(ip);
        assert!(is_v4_mapped(&m));
        let bytes: [u8; 16] = unsafe_free_bytes(&m);
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 10, 0, 1]
        );
        assert!(!is_v4_mapped(&[0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]));
    }

    fn unsafe_free_bytes(w: &[u32; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, word) in w.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        out
    }
}
