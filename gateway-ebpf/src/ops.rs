//! sock_ops: publish a redirected connection under the 4-tuple the proxy will see (DESIGN §4).
//!
//! On `ACTIVE_ESTABLISHED` (the client's SYN-ACK arrived; its ACK, and so the proxy's
//! `accept()`, comes after this returns) the record stored by `connect4/6` under the socket
//! cookie is copied to `GW_FLOWS` under (client addr, client port, proxy addr, proxy port).
//! The state callback then removes the cookie entry when the socket closes.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_TCP_CLOSE,
    },
    helpers::generated::bpf_get_socket_cookie,
    programs::SockOpsContext,
};
use core::ptr::addr_of;

use aya_log_ebpf::debug;
use gateway_common::{AF_INET, FlowKey, v4_mapped};

use crate::maps::{FLOWS, SOCKETS};

const AF_INET_U32: u32 = AF_INET as u32;

pub fn sock_ops(ctx: &SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => established(ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => {
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            let _ = SOCKETS.remove(cookie);
        }
        _ => {}
    }
    1
}

fn established(ctx: &SockOpsContext) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(info) = (unsafe { SOCKETS.get(cookie) }) else {
        return;
    };
    let o = ctx.ops;
    // Every context field is read unconditionally, each with its own volatile load straight
    // off the context pointer. Reading them only in the branch that needs them lets the
    // compiler merge the branches into one load through `ctx + offset_register`, which the
    // verifier rejects ("dereference of modified ctx ptr").
    let family = rd(unsafe { addr_of!((*o).family) });
    let local4 = rd(unsafe { addr_of!((*o).local_ip4) });
    let remote4 = rd(unsafe { addr_of!((*o).remote_ip4) });
    let local6 = [
        rd(unsafe { addr_of!((*o).local_ip6[0]) }),
        rd(unsafe { addr_of!((*o).local_ip6[1]) }),
        rd(unsafe { addr_of!((*o).local_ip6[2]) }),
        rd(unsafe { addr_of!((*o).local_ip6[3]) }),
    ];
    let remote6 = [
        rd(unsafe { addr_of!((*o).remote_ip6[0]) }),
        rd(unsafe { addr_of!((*o).remote_ip6[1]) }),
        rd(unsafe { addr_of!((*o).remote_ip6[2]) }),
        rd(unsafe { addr_of!((*o).remote_ip6[3]) }),
    ];
    let (src_ip, dst_ip) = if family == AF_INET_U32 {
        (v4_mapped(local4), v4_mapped(remote4))
    } else {
        (local6, remote6)
    };
    let local_port = rd(unsafe { addr_of!((*o).local_port) });
    let remote_port_raw = rd(unsafe { addr_of!((*o).remote_port) });
    let key = FlowKey {
        src_ip,
        dst_ip,
        // local_port is host byte order; remote_port holds the network-order port in its upper
        // 16 bits on little-endian machines (the kernel shifts skc_dport left by 16).
        src_port: local_port as u16,
        dst_port: remote_port(remote_port_raw),
        _pad: 0,
    };
    if FLOWS.insert(key, info, 0).is_err() {
        debug!(
            ctx,
            "sock_ops: flow table full, proxy will refuse port {}", key.src_port
        );
        return;
    }
    // Ask for the state callback so the cookie entry goes when the socket closes.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    debug!(
        ctx,
        "sock_ops: published flow from port {} to proxy port {}", key.src_port, key.dst_port
    );
}

#[inline(always)]
fn rd(p: *const u32) -> u32 {
    unsafe { core::ptr::read_volatile(p) }
}

#[inline(always)]
fn remote_port(raw: u32) -> u16 {
    #[cfg(target_endian = "little")]
    {
        u16::from_be((raw >> 16) as u16)
    }
    #[cfg(target_endian = "big")]
    {
        raw as u16
    }
}
