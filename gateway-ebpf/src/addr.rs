//! cgroup sock_addr hooks: the first step of the data path (DESIGN §1, §4).
//!
//! - `connect4/6`: a TCP connect to a provider address on a redirected port is rewritten to the
//!   proxy and its original destination + caller identity stored under the socket cookie; a UDP
//!   connect there is denied (EPERM) so QUIC falls back to TCP.
//! - `sendmsg4/6`: an unconnected UDP send to a provider address on a redirected port is denied.
//! - `getpeername4/6`: a redirected socket reports the address it dialled, not the proxy.
//!
//! Sockets carrying the gateway's bypass mark (its own upstream sockets), and any socket of the
//! gateway's own process, are never touched. Failures to record a redirect fail closed: the
//! connect is denied rather than sent direct.

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
    AF_INET, AF_INET6, ConnInfo, PROXY_F_V6, ProxyConfig, is_v4_mapped, v4_mapped,
};

use crate::{
    ALLOW, DENY,
    maps::{PORTS, PROVIDERS_V4, PROVIDERS_V6, PROXY, SOCKETS},
};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

/// What a hook decided about one call.
enum Verdict {
    /// Not a provider destination (or not a hooked socket type): untouched, not logged.
    Pass,
    /// Provider destination, but the caller is the gateway itself.
    Bypass,
    Redirect,
    Deny,
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

#[inline(always)]
fn v4_is_provider(ip_be: u32) -> bool {
    PROVIDERS_V4
        .get(Key::new(32, ip_be.to_ne_bytes()))
        .is_some()
}

#[inline(always)]
fn v6_is_provider(ip: &[u32; 4]) -> bool {
    PROVIDERS_V6
        .get(Key::new(128, words_to_bytes(ip)))
        .is_some()
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

/// The gateway's own sockets: marked with the bypass mark, or opened by the gateway process.
#[inline(always)]
fn is_gateway_socket(ctx: &SockAddrContext, cfg: &ProxyConfig) -> bool {
    if cfg.bypass_tgid != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == cfg.bypass_tgid {
        return true;
    }
    if cfg.bypass_mark == 0 {
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
        _pad0: 0,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm,
    };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    SOCKETS.insert(cookie, info, 0).map_err(|e| e as i64)
}

/// Decide for a destination already known to be a provider on a hooked port.
#[inline(always)]
fn decide_provider(ctx: &SockAddrContext, cfg: &ProxyConfig) -> Verdict {
    if is_gateway_socket(ctx, cfg) {
        return Verdict::Bypass;
    }
    match socket_type(ctx) {
        SOCK_STREAM => Verdict::Redirect,
        SOCK_DGRAM => Verdict::Deny,
        _ => Verdict::Pass,
    }
}

#[inline(always)]
fn log_verdict(ctx: &SockAddrContext, verdict: &Verdict, hook: &str, ip: [u8; 16], port: u16) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match verdict {
        Verdict::Pass => {}
        Verdict::Bypass => debug!(ctx, "{} bypassed [{:i}]:{} tgid {}", hook, ip, port, tgid),
        Verdict::Redirect => debug!(ctx, "{} redirected [{:i}]:{} tgid {}", hook, ip, port, tgid),
        Verdict::Deny => debug!(ctx, "{} denied udp [{:i}]:{} tgid {}", hook, ip, port, tgid),
    }
}

pub fn connect4(ctx: &SockAddrContext) -> i32 {
    let Some(cfg) = proxy() else { return ALLOW };
    let port = user_port(ctx);
    if !port_hooked(port) {
        return ALLOW;
    }
    let ip = unsafe { (*sa(ctx)).user_ip4 };
    if !v4_is_provider(ip) {
        return ALLOW;
    }
    let mut verdict = decide_provider(ctx, cfg);
    if let Verdict::Redirect = verdict {
        if record(ctx, v4_mapped(ip), port, AF_INET).is_err() {
            verdict = Verdict::Deny;
        } else {
            unsafe {
                (*sa(ctx)).user_ip4 = cfg.v4_addr;
                (*sa(ctx)).user_port = u16::to_be(cfg.v4_port) as u32;
            }
        }
    }
    log_verdict(
        ctx,
        &verdict,
        "connect4",
        words_to_bytes(&v4_mapped(ip)),
        port,
    );
    match verdict {
        Verdict::Deny => DENY,
        _ => ALLOW,
    }
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

/// Whether an IPv6 destination (possibly v4-mapped) is a provider address.
#[inline(always)]
fn v6_dst_is_provider(ip: &[u32; 4]) -> bool {
    if is_v4_mapped(ip) {
        v4_is_provider(ip[3])
    } else {
        v6_is_provider(ip)
    }
}

pub fn connect6(ctx: &SockAddrContext) -> i32 {
    let Some(cfg) = proxy() else { return ALLOW };
    let port = user_port(ctx);
    if !port_hooked(port) {
        return ALLOW;
    }
    let ip = user_ip6(ctx);
    if !v6_dst_is_provider(&ip) {
        return ALLOW;
    }
    let mut verdict = decide_provider(ctx, cfg);
    if let Verdict::Redirect = verdict {
        let mapped = is_v4_mapped(&ip);
        if !mapped && cfg.flags & PROXY_F_V6 == 0 {
            // No IPv6 listener: refuse rather than let the connection go direct.
            verdict = Verdict::Deny;
        } else if record(ctx, ip, port, AF_INET6).is_err() {
            verdict = Verdict::Deny;
        } else if mapped {
            set_user_ip6(ctx, &v4_mapped(cfg.v4_addr));
            unsafe { (*sa(ctx)).user_port = u16::to_be(cfg.v4_port) as u32 };
        } else {
            set_user_ip6(ctx, &cfg.v6_addr);
            unsafe { (*sa(ctx)).user_port = u16::to_be(cfg.v6_port) as u32 };
        }
    }
    log_verdict(ctx, &verdict, "connect6", words_to_bytes(&ip), port);
    match verdict {
        Verdict::Deny => DENY,
        _ => ALLOW,
    }
}

pub fn sendmsg4(ctx: &SockAddrContext) -> i32 {
    let Some(cfg) = proxy() else { return ALLOW };
    let port = user_port(ctx);
    if !port_hooked(port) {
        return ALLOW;
    }
    let ip = unsafe { (*sa(ctx)).user_ip4 };
    if !v4_is_provider(ip) {
        return ALLOW;
    }
    let verdict = if is_gateway_socket(ctx, cfg) {
        Verdict::Bypass
    } else {
        Verdict::Deny
    };
    log_verdict(
        ctx,
        &verdict,
        "sendmsg4",
        words_to_bytes(&v4_mapped(ip)),
        port,
    );
    match verdict {
        Verdict::Deny => DENY,
        _ => ALLOW,
    }
}

pub fn sendmsg6(ctx: &SockAddrContext) -> i32 {
    let Some(cfg) = proxy() else { return ALLOW };
    let port = user_port(ctx);
    if !port_hooked(port) {
        return ALLOW;
    }
    let ip = user_ip6(ctx);
    if !v6_dst_is_provider(&ip) {
        return ALLOW;
    }
    let verdict = if is_gateway_socket(ctx, cfg) {
        Verdict::Bypass
    } else {
        Verdict::Deny
    };
    log_verdict(ctx, &verdict, "sendmsg6", words_to_bytes(&ip), port);
    match verdict {
        Verdict::Deny => DENY,
        _ => ALLOW,
    }
}

#[inline(always)]
fn redirected(ctx: &SockAddrContext) -> Option<&'static ConnInfo> {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    unsafe { SOCKETS.get(cookie) }
}

pub fn getpeername4(ctx: &SockAddrContext) -> i32 {
    if let Some(info) = redirected(ctx) {
        unsafe {
            (*sa(ctx)).user_ip4 = info.orig_ip[3];
            (*sa(ctx)).user_port = u16::to_be(info.orig_port) as u32;
        }
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
