//! cgroup sock_addr hooks: the first step of the data path (DESIGN §1, §4).
//!
//! Default deny on provider addresses: every call to one is decided here.
//! - `connect4/6`: TCP to a provider address on a redirected port → rewritten to the proxy,
//!   the original destination + caller identity stored under the socket cookie; TCP on any
//!   other port, UDP on any port, and any other socket type → EPERM.
//! - DNS (TCP and UDP port 53, any server): rewritten to the proxy's address and port, which
//!   serves DNS on both protocols and learns provider addresses from the answers before the
//!   workload sees them. `recvmsg4/6` make the answer appear to come from the server asked;
//!   the `egress` program publishes each datagram under its 4-tuple for the proxy.
//! - `sendmsg4/6`: unconnected UDP: DNS rewritten as above; to a provider address → EPERM.
//! - `getpeername4/6`: a redirected socket reports the address it dialled, not the proxy.
//!
//! Only sockets carrying the gateway's bypass mark *and* opened from the gateway's own cgroup
//! are never touched (no pid: a dead daemon's pid can be reused). Failures to record a redirect
//! fail closed: the call is denied rather than sent direct.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    },
    maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use aya_log_ebpf::debug;
use gateway_common::{
    AF_INET, AF_INET6, CONN_F_DNS, ConnInfo, DNS_PORT, PROXY_F_DNS, PROXY_F_V6, ProxyConfig,
    is_v4_mapped, v4_mapped,
};

use crate::{
    ALLOW, DENY,
    maps::{PORTS, PROVIDERS_V4, PROVIDERS_V6, PROXY, SOCKETS},
};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

/// What a hook decided about one call.
enum Verdict {
    /// Not a provider or DNS destination: untouched, not logged.
    Pass,
    /// Provider or DNS destination, but the caller is the gateway itself.
    Bypass,
    /// A provider connection, to the proxy.
    Redirect,
    /// A DNS query, to the proxy's DNS service.
    Dns,
    /// Refused (EPERM); `reason` for the log.
    Deny(&'static str),
}

#[inline(always)]
fn sa(ctx: &SockAddrContext) -> *mut bpf_sock_addr {
    ctx.sock_addr
}

#[inline(always)]
fn proxy() -> Option<&'static ProxyConfig> {
    PROXY.get(0)
}

/// The destination port of the call, host byte order (`user_port` holds it in network order).
#[inline(always)]
fn user_port(ctx: &SockAddrContext) -> u16 {
    u16::from_be(unsafe { (*sa(ctx)).user_port } as u16)
}

#[inline(always)]
fn port_hooked(port: u16) -> bool {
    unsafe { PORTS.get(port) }.is_some()
}

/// The provider-set bits of an IPv4 address (0: not a provider address).
#[inline(always)]
fn v4_flags(ip_be: u32) -> u8 {
    PROVIDERS_V4
        .get(Key::new(32, ip_be.to_ne_bytes()))
        .copied()
        .unwrap_or(0)
}

#[inline(always)]
fn v6_flags(ip: &[u32; 4]) -> u8 {
    if is_v4_mapped(ip) {
        return v4_flags(ip[3]);
    }
    PROVIDERS_V6
        .get(Key::new(128, words_to_bytes(ip)))
        .copied()
        .unwrap_or(0)
}

#[inline(always)]
fn words_to_bytes(ip: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = ip[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

/// The gateway's own sockets: marked with the bypass mark *and* opened from its cgroup.
#[inline(always)]
fn is_gateway_socket(ctx: &SockAddrContext, cfg: &ProxyConfig) -> bool {
    if cfg.bypass_mark == 0 || cfg.bypass_cgroup == 0 {
        return false;
    }
    if unsafe { bpf_get_current_cgroup_id() } != cfg.bypass_cgroup {
        return false;
    }
    let sk: *mut bpf_sock = unsafe { (*sa(ctx)).__bindgen_anon_1.sk };
    if sk.is_null() {
        return false;
    }
    unsafe { (*sk).mark == cfg.bypass_mark }
}

#[inline(always)]
fn socket_type(ctx: &SockAddrContext) -> u32 {
    unsafe { (*sa(ctx)).type_ }
}

/// Store the original destination and the caller's identity under the socket cookie.
#[inline(always)]
fn record(
    ctx: &SockAddrContext,
    orig_ip: [u32; 4],
    orig_port: u16,
    sock_family: u16,
    flags: u32,
) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let comm = bpf_get_current_comm().unwrap_or([0u8; 16]);
    let info = ConnInfo {
        orig_ip,
        orig_port,
        sock_family,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        flags,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm,
    };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    SOCKETS.insert(cookie, info, 0).map_err(|e| e as i64)
}

/// The one decision for a connect() or an unconnected send: `addr_flags` are the destination's
/// provider-set bits, `dns` whether it is port 53 with DNS learning on.
#[inline(always)]
fn decide(
    ctx: &SockAddrContext,
    cfg: &ProxyConfig,
    port: u16,
    addr_flags: u8,
    dns: bool,
    connect: bool,
) -> Verdict {
    if addr_flags == 0 && !dns {
        return Verdict::Pass;
    }
    if is_gateway_socket(ctx, cfg) {
        return Verdict::Bypass;
    }
    let ty = socket_type(ctx);
    if dns && (ty == SOCK_DGRAM || (ty == SOCK_STREAM && connect)) {
        return Verdict::Dns;
    }
    if addr_flags == 0 {
        // Port 53 but neither TCP nor UDP (e.g. SCTP): not ours to serve.
        return Verdict::Pass;
    }
    match ty {
        SOCK_STREAM if connect && port_hooked(port) => Verdict::Redirect,
        SOCK_STREAM => Verdict::Deny("tcp port not intercepted"),
        SOCK_DGRAM => Verdict::Deny("udp"),
        _ => Verdict::Deny("socket type"),
    }
}

#[inline(always)]
fn log_verdict(ctx: &SockAddrContext, verdict: &Verdict, hook: &str, ip: [u8; 16], port: u16) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match verdict {
        Verdict::Pass => {}
        Verdict::Bypass => debug!(ctx, "{} bypassed [{:i}]:{} tgid {}", hook, ip, port, tgid),
        Verdict::Redirect => debug!(ctx, "{} redirected [{:i}]:{} tgid {}", hook, ip, port, tgid),
        Verdict::Dns => debug!(ctx, "{} dns [{:i}]:{} tgid {}", hook, ip, port, tgid),
        Verdict::Deny(why) => debug!(
            ctx,
            "{} denied {} [{:i}]:{} tgid {}", hook, *why, ip, port, tgid
        ),
    }
}

#[inline(always)]
fn set_v4(ctx: &SockAddrContext, ip_be: u32, port: u16) {
    unsafe {
        (*sa(ctx)).user_ip4 = ip_be;
        (*sa(ctx)).user_port = u16::to_be(port) as u32;
    }
}

/// connect4 and sendmsg4: `connect` tells which.
#[inline(always)]
fn hook4(ctx: &SockAddrContext, connect: bool, hook: &str) -> i32 {
    let Some(cfg) = proxy() else { return ALLOW };
    let port = user_port(ctx);
    let ip = unsafe { (*sa(ctx)).user_ip4 };
    let dns = port == DNS_PORT && cfg.flags & PROXY_F_DNS != 0 && ip != cfg.v4_addr;
    let addr_flags = v4_flags(ip);
    let mut verdict = decide(ctx, cfg, port, addr_flags, dns, connect);
    let conn_flags = addr_flags as u32 | if dns { CONN_F_DNS } else { 0 };
    if matches!(verdict, Verdict::Redirect | Verdict::Dns) {
        if record(ctx, v4_mapped(ip), port, AF_INET, conn_flags).is_err() {
            verdict = Verdict::Deny("record failed");
        } else {
            set_v4(ctx, cfg.v4_addr, cfg.v4_port);
        }
    }
    log_verdict(ctx, &verdict, hook, words_to_bytes(&v4_mapped(ip)), port);
    match verdict {
        Verdict::Deny(_) => DENY,
        _ => ALLOW,
    }
}

pub fn connect4(ctx: &SockAddrContext) -> i32 {
    hook4(ctx, true, "connect4")
}

pub fn sendmsg4(ctx: &SockAddrContext) -> i32 {
    hook4(ctx, false, "sendmsg4")
}

#[inline(always)]
fn user_ip6(ctx: &SockAddrContext) -> [u32; 4] {
    let s = sa(ctx);
    unsafe {
        [
            (*s).user_ip6[0],
            (*s).user_ip6[1],
            (*s).user_ip6[2],
            (*s).user_ip6[3],
        ]
    }
}

#[inline(always)]
fn set_user_ip6(ctx: &SockAddrContext, ip: &[u32; 4]) {
    let s = sa(ctx);
    // One 32-bit store per word: the verifier accepts only those on user_ip6.
    unsafe {
        (*s).user_ip6[0] = ip[0];
        (*s).user_ip6[1] = ip[1];
        (*s).user_ip6[2] = ip[2];
        (*s).user_ip6[3] = ip[3];
    }
}

#[inline(always)]
fn is_proxy6(cfg: &ProxyConfig, ip: &[u32; 4]) -> bool {
    if is_v4_mapped(ip) {
        ip[3] == cfg.v4_addr
    } else {
        cfg.flags & PROXY_F_V6 != 0
            && ip[0] == cfg.v6_addr[0]
            && ip[1] == cfg.v6_addr[1]
            && ip[2] == cfg.v6_addr[2]
            && ip[3] == cfg.v6_addr[3]
    }
}

/// connect6 and sendmsg6 (IPv6 and v4-mapped destinations).
#[inline(always)]
fn hook6(ctx: &SockAddrContext, connect: bool, hook: &str) -> i32 {
    let Some(cfg) = proxy() else { return ALLOW };
    let port = user_port(ctx);
    let ip = user_ip6(ctx);
    let dns = port == DNS_PORT && cfg.flags & PROXY_F_DNS != 0 && !is_proxy6(cfg, &ip);
    let addr_flags = v6_flags(&ip);
    let mut verdict = decide(ctx, cfg, port, addr_flags, dns, connect);
    let conn_flags = addr_flags as u32 | if dns { CONN_F_DNS } else { 0 };
    if matches!(verdict, Verdict::Redirect | Verdict::Dns) {
        let mapped = is_v4_mapped(&ip);
        if !mapped && cfg.flags & PROXY_F_V6 == 0 {
            // No IPv6 listener: refuse rather than let the call go direct.
            verdict = Verdict::Deny("no ipv6 listener");
        } else if record(ctx, ip, port, AF_INET6, conn_flags).is_err() {
            verdict = Verdict::Deny("record failed");
        } else if mapped {
            set_user_ip6(ctx, &v4_mapped(cfg.v4_addr));
            unsafe { (*sa(ctx)).user_port = u16::to_be(cfg.v4_port) as u32 };
        } else {
            set_user_ip6(ctx, &cfg.v6_addr);
            unsafe { (*sa(ctx)).user_port = u16::to_be(cfg.v6_port) as u32 };
        }
    }
    log_verdict(ctx, &verdict, hook, words_to_bytes(&ip), port);
    match verdict {
        Verdict::Deny(_) => DENY,
        _ => ALLOW,
    }
}

pub fn connect6(ctx: &SockAddrContext) -> i32 {
    hook6(ctx, true, "connect6")
}

pub fn sendmsg6(ctx: &SockAddrContext) -> i32 {
    hook6(ctx, false, "sendmsg6")
}

#[inline(always)]
fn redirected(ctx: &SockAddrContext) -> Option<&'static ConnInfo> {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    unsafe { SOCKETS.get(cookie) }
}

pub fn getpeername4(ctx: &SockAddrContext) -> i32 {
    if let Some(info) = redirected(ctx) {
        set_v4(ctx, info.orig_ip[3], info.orig_port);
    }
    ALLOW
}

pub fn getpeername6(ctx: &SockAddrContext) -> i32 {
    if let Some(info) = redirected(ctx) {
        let ip = info.orig_ip;
        set_user_ip6(ctx, &ip);
        unsafe { (*sa(ctx)).user_port = u16::to_be(info.orig_port) as u32 };
    }
    ALLOW
}

/// A DNS answer from the proxy is reported as coming from the server the socket asked (resolvers
/// drop answers from any other address). Needs kernel ≥ 5.2. Must return 1.
pub fn recvmsg4(ctx: &SockAddrContext) -> i32 {
    let Some(cfg) = proxy() else { return ALLOW };
    let Some(info) = redirected(ctx) else {
        return ALLOW;
    };
    if info.flags & CONN_F_DNS == 0 {
        return ALLOW;
    }
    let ip = unsafe { (*sa(ctx)).user_ip4 };
    if ip == cfg.v4_addr && user_port(ctx) == cfg.v4_port {
        set_v4(ctx, info.orig_ip[3], info.orig_port);
    }
    ALLOW
}

pub fn recvmsg6(ctx: &SockAddrContext) -> i32 {
    let Some(cfg) = proxy() else { return ALLOW };
    let Some(info) = redirected(ctx) else {
        return ALLOW;
    };
    if info.flags & CONN_F_DNS == 0 {
        return ALLOW;
    }
    let ip = user_ip6(ctx);
    let port = user_port(ctx);
    let from_proxy = if is_v4_mapped(&ip) {
        ip[3] == cfg.v4_addr && port == cfg.v4_port
    } else {
        is_proxy6(cfg, &ip) && port == cfg.v6_port
    };
    if from_proxy {
        let orig = info.orig_ip;
        set_user_ip6(ctx, &orig);
        unsafe { (*sa(ctx)).user_port = u16::to_be(info.orig_port) as u32 };
    }
    ALLOW
}
