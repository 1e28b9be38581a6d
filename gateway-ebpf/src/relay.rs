//! sk_skb stream verdict: the kernel relay of a spliced connection (DESIGN §1, intercept).
//!
//! Once the gateway has decided to splice a connection, it may put both of its sockets (the
//! client's accepted one and its own upstream one) in `GW_RELAY_TARGETS`, each under the
//! *other* socket's cookie, then in `GW_RELAY` (this program's map). From then on every segment
//! either socket receives is handed, in order, to the peer's send queue by the kernel: the
//! payload never reaches the gateway's threads. A socket without a target entry never gets
//! here (the gateway inserts targets first), so the redirect below cannot miss by design; if
//! it did (the peer already reset and left the map), the segment is dropped and the connection
//! is being torn down anyway. Bytes handed on are counted per receiving socket in
//! `GW_RELAY_COUNTS` (when the gateway created the entry): it needs the count to pass a FIN on
//! only after every byte before it (see gateway/src/intercept/relay.rs).

use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_get_socket_cookie, programs::SkBuffContext,
};

use crate::maps::{RELAY_COUNTS, RELAY_TARGETS};

/// `sk_action::SK_DROP`: the segment is freed.
const DROP: u32 = 0;

pub fn verdict(ctx: &SkBuffContext) -> u32 {
    // A bare FIN comes as an empty segment. Handed on, the peer's send of zero bytes would count
    // as a broken pipe and fail the connection; the FIN itself is the gateway's to pass on.
    if ctx.len() == 0 {
        return DROP;
    }
    // SAFETY: the helper reads the socket of the program's own context.
    let mut cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if let Some(n) = RELAY_COUNTS.get_ptr_mut(cookie) {
        // One socket's segments are handled one at a time (under its lock): no lost update.
        unsafe { *n += u64::from(ctx.len()) };
    }
    RELAY_TARGETS.redirect_skb(ctx, &mut cookie, 0) as u32
}
