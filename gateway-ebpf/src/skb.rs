//! cgroup_skb egress: publish a redirected DNS datagram under the 4-tuple the proxy sees.
//!
//! `connect4/6` and `sendmsg4/6` store a DNS socket's record under its cookie, but a UDP
//! socket's source port is often chosen only after those hooks run (autobind on connect, and a
//! connected socket's later sends pass no hook at all). Here, on the way out, every datagram
//! of the cgroup addressed to the proxy's DNS service carries its final addresses: the record is
//! copied to `GW_UDP_FLOWS` under (client addr, client port, proxy addr, proxy port), where the
//! proxy finds the server the workload asked and who asked. Needs kernel ≥ 5.8 (like the rest).
//! Always lets the packet go: a missing record makes the proxy drop the query (fail closed).

use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_get_socket_cookie, programs::SkBuffContext,
};
use gateway_common::{CONN_F_DNS, FlowKey, PROXY_F_DNS, PROXY_F_V6, v4_mapped};

use crate::maps::{PROXY, SOCKETS, UDP_FLOWS};

/// Return value of a cgroup_skb program: let the packet go.
const PASS: i32 = 1;
const IPPROTO_UDP: u8 = 17;

pub fn egress(ctx: &SkBuffContext) -> i32 {
    let _ = try_egress(ctx);
    PASS
}

#[inline(always)]
fn try_egress(ctx: &SkBuffContext) -> Result<(), i64> {
    let Some(cfg) = PROXY.get(0) else {
        return Ok(());
    };
    if cfg.flags & PROXY_F_DNS == 0 {
        return Ok(());
    }
    // cgroup_skb data starts at the network header.
    let first: u8 = ctx.load(0)?;
    let (key, ok) = match first >> 4 {
        4 => {
            if ctx.load::<u8>(9)? != IPPROTO_UDP {
                return Ok(());
            }
            let ihl = ((first & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Ok(());
            }
            let src: u32 = ctx.load(12)?;
            let dst: u32 = ctx.load(16)?;
            let ports: [u8; 4] = ctx.load(ihl & 0x3c)?;
            let sport = u16::from_be_bytes([ports[0], ports[1]]);
            let dport = u16::from_be_bytes([ports[2], ports[3]]);
            let key = FlowKey {
                src_ip: v4_mapped(src),
                dst_ip: v4_mapped(dst),
                src_port: sport,
                dst_port: dport,
                _pad: 0,
            };
            (key, dst == cfg.v4_addr && dport == cfg.v4_port)
        }
        6 => {
            // Only a UDP header straight after the fixed header: resolvers add no extension
            // headers; anything else is not a query the proxy answers (and so fails closed).
            if ctx.load::<u8>(6)? != IPPROTO_UDP || cfg.flags & PROXY_F_V6 == 0 {
                return Ok(());
            }
            let src: [u32; 4] = ctx.load(8)?;
            let dst: [u32; 4] = ctx.load(24)?;
            let ports: [u8; 4] = ctx.load(40)?;
            let sport = u16::from_be_bytes([ports[0], ports[1]]);
            let dport = u16::from_be_bytes([ports[2], ports[3]]);
            let key = FlowKey {
                src_ip: src,
                dst_ip: dst,
                src_port: sport,
                dst_port: dport,
                _pad: 0,
            };
            let to_proxy = dst[0] == cfg.v6_addr[0]
                && dst[1] == cfg.v6_addr[1]
                && dst[2] == cfg.v6_addr[2]
                && dst[3] == cfg.v6_addr[3]
                && dport == cfg.v6_port;
            (key, to_proxy)
        }
        _ => return Ok(()),
    };
    if !ok {
        return Ok(());
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(info) = (unsafe { SOCKETS.get(cookie) }) else {
        return Ok(());
    };
    if info.flags & CONN_F_DNS == 0 {
        return Ok(());
    }
    UDP_FLOWS.insert(key, info, 0).map_err(|e| e as i64)
}
