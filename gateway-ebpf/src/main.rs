//! eBPF programs of the gateway's redirect stage (DESIGN §4).
//!
//! Entry points are one line each; the work is in `addr` (cgroup sock_addr hooks: connect,
//! sendmsg, recvmsg, getpeername), `ops` (sock_ops: publish a redirected flow under its
//! 4-tuple) and `skb` (cgroup_skb egress: the same for redirected DNS datagrams).
//! Every program needs kernel ≥ 5.8 (bpf_link for cgroups, getpeername hooks, LRU maps,
//! ring-buffer logging); developed and tested on 6.x.
#![no_std]
#![no_main]

mod addr;
mod maps;
mod ops;
mod relay;
mod skb;

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock_addr, sock_ops, stream_verdict},
    programs::{SkBuffContext, SockAddrContext, SockOpsContext},
};

/// Return value of a cgroup sock_addr program: let the call go on (possibly rewritten).
const ALLOW: i32 = 1;
/// Return value of a cgroup sock_addr program: fail the call with EPERM.
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn gw_connect4(ctx: SockAddrContext) -> i32 {
    addr::connect4(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn gw_connect6(ctx: SockAddrContext) -> i32 {
    addr::connect6(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn gw_sendmsg4(ctx: SockAddrContext) -> i32 {
    addr::sendmsg4(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn gw_sendmsg6(ctx: SockAddrContext) -> i32 {
    addr::sendmsg6(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn gw_getpeername4(ctx: SockAddrContext) -> i32 {
    addr::getpeername4(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn gw_getpeername6(ctx: SockAddrContext) -> i32 {
    addr::getpeername6(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn gw_recvmsg4(ctx: SockAddrContext) -> i32 {
    addr::recvmsg4(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn gw_recvmsg6(ctx: SockAddrContext) -> i32 {
    addr::recvmsg6(&ctx)
}

#[cgroup_skb(egress)]
pub fn gw_egress(ctx: SkBuffContext) -> i32 {
    skb::egress(&ctx)
}

#[sock_ops]
pub fn gw_sock_ops(ctx: SockOpsContext) -> u32 {
    ops::sock_ops(&ctx)
}

#[stream_verdict]
pub fn gw_relay(ctx: SkBuffContext) -> u32 {
    relay::verdict(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
