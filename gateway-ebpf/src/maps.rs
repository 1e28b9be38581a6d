//! The maps, declared once; their names and value types come from `gateway-common`.
//! None is pinned by the object itself: the daemon pins every map by path at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, SockHash},
};
use gateway_common::{
    ConnInfo, FlowKey, MAX_CIDRS, MAX_FLOWS, MAX_PORTS, MAX_RELAYED, MAX_SOCKETS, MAX_UDP_FLOWS,
    Meta, ProxyConfig,
};

#[map(name = "GW_PROVIDERS_V4")]
pub static PROVIDERS_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_CIDRS, 0);

#[map(name = "GW_PROVIDERS_V6")]
pub static PROVIDERS_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_CIDRS, 0);

#[map(name = "GW_PORTS")]
pub static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "GW_PROXY")]
pub static PROXY: Array<ProxyConfig> = Array::with_max_entries(1, 0);

#[map(name = "GW_SOCKETS")]
pub static SOCKETS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

#[map(name = "GW_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, ConnInfo> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "GW_UDP_FLOWS")]
pub static UDP_FLOWS: LruHashMap<FlowKey, ConnInfo> =
    LruHashMap::with_max_entries(MAX_UDP_FLOWS, 0);

#[map(name = "GW_META")]
pub static META: Array<Meta> = Array::with_max_entries(1, 0);

// The kernel relay of spliced connections (relay.rs). Not pinned: sockets live and die with
// the daemon that holds them, so each daemon starts with empty maps of its own.

#[map(name = "GW_RELAY_TARGETS")]
pub static RELAY_TARGETS: SockHash<u64> = SockHash::with_max_entries(MAX_RELAYED, 0);

#[map(name = "GW_RELAY")]
pub static RELAY: SockHash<u64> = SockHash::with_max_entries(MAX_RELAYED, 0);

#[map(name = "GW_RELAY_COUNTS")]
pub static RELAY_COUNTS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_RELAYED, 0);
