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
use aya_log_ebpf::debug;
use gateway_common::{AF_INET, FlowKey, v4_mapped};

use crate::maps::{FLOWS, SOCKETS};

const AF_INET_U32: u32 = AF_INET as u32;

pub fn sock_ops(ctx: &SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => established(ctx),
        BPF_SOCK_OPS_STATE_CB => {
            if ctx.arg(1) == BPF_TCP_CLOSE {
                let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
                let _ = SOCKETS.remove(&cookie);
            }
        }
        _ => {}
    }
    1
}

fn established(ctx: &SockOpsContext) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(info) = (unsafe { SOCKETS.get(&cookie) }) else { return };
    let (src_ip, dst_ip) = if ctx.family() == AF_INET_U32 {
        (v4_mapped(ctx.local_ip4()), v4_mapped(ctx.remote_ip4()))
    } else {
        (ctx.local_ip6(), ctx.remote_ip6())
    };
    let key = FlowKey {
        src_ip,
        dst_ip,
        // local_port is host byte order; remote_port holds the network-order port in its upper
        // 16 bits on little-endian machines (the kernel shifts skc_dport left by 16).
        src_port: ctx.local_port() as u16,
        dst_port: remote_port(ctx.remote_port()),
        _pad: 0,
    };
    if FLOWS.insert(&key, info, 0).is_err() {
        debug!(ctx, "sock_ops: flow table full, proxy will refuse port {}", key.src_port);
        return;
    }
    // Ask for the state callback so the cookie entry goes when the socket closes.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    debug!(ctx, "sock_ops: published flow from port {} to proxy port {}", key.src_port, key.dst_port);
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
