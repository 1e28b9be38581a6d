use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr as _,
    sync::Mutex,
};

use gateway_common::{ADDR_PROVIDER as P, ADDR_SHARED as S};
use hickory_proto::{
    op::{Message, MessageType, Query},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{
            A, AAAA, CNAME, HTTPS,
            svcb::{IpHint, SVCB, SvcParamKey, SvcParamValue},
        },
    },
};
use ipnet::IpNet;

use super::*;
use crate::{
    config::Config,
    redirect::{
        RedirectError,
        addrset::{AddrSet, CidrSink},
        origdst::{ConnRecord, MockOrigDst},
    },
};

/// A sink the test can look into while the proxy holds it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<BTreeMap<IpNet, u8>>>);
impl CidrSink for Shared {
    fn current(&self) -> BTreeMap<IpNet, u8> {
        self.0.lock().unwrap().clone()
    }
    fn insert(&mut self, net: IpNet, flags: u8) -> Result<(), RedirectError> {
        self.0.lock().unwrap().insert(net, flags);
        Ok(())
    }
    fn remove(&mut self, net: IpNet) -> Result<(), RedirectError> {
        self.0.lock().unwrap().remove(&net);
        Ok(())
    }
}

/// A sink whose writes fail (a full map).
struct Full;
impl CidrSink for Full {
    fn current(&self) -> BTreeMap<IpNet, u8> {
        BTreeMap::new()
    }
    fn insert(&mut self, _: IpNet, _: u8) -> Result<(), RedirectError> {
        Err(RedirectError::Dns("map full".into()))
    }
    fn remove(&mut self, _: IpNet) -> Result<(), RedirectError> {
        Ok(())
    }
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn answer(q: &str, qtype: RecordType, records: Vec<Record>) -> Message {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Response)
        .add_query(Query::query(name(q), qtype));
    for r in records {
        m.add_answer(r);
    }
    m
}

fn a(owner: &str, ip: &str, ttl: u32) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::A(A(Ipv4Addr::from_str(ip).unwrap())),
    )
}

fn aaaa(owner: &str, ip: &str, ttl: u32) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::AAAA(AAAA(Ipv6Addr::from_str(ip).unwrap())),
    )
}

fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target))))
}

fn catalog(extra: &str) -> Arc<Catalog> {
    let cfg = Config::parse(
        &format!(
            "state_dir = \"/tmp/x\"\nbuiltin_providers = true\n{extra}\n[[provider]]\nname = \"corp\"\nhosts = [\"llm.corp.example\"]\nshared = false\n"
        ),
        "test",
    )
    .unwrap();
    Arc::new(Catalog::from_config(&cfg))
}

fn flags_in(cat: &Catalog) -> impl Fn(&str) -> Option<u8> + '_ {
    |n| cat.dns_name_flags(n)
}

#[test]
fn exact_names_any_case_trailing_dot_v4_and_v6() {
    let cat = catalog("");
    let m = answer(
        "API.OpenAI.com.",
        RecordType::A,
        vec![
            a("api.openai.com.", "198.51.100.1", 60),
            aaaa("API.OPENAI.COM.", "2001:db8::1", 30),
        ],
    );
    let found = provider_addresses(&m, &flags_in(&cat));
    let ips: Vec<String> = found.iter().map(|f| f.ip.to_string()).collect();
    assert_eq!(ips, ["198.51.100.1", "2001:db8::1"]);
    assert!(
        found.iter().all(|f| f.flags == P | S),
        "openai is a CDN front"
    );
    assert_eq!(found[1].ttl, 30);
}

#[test]
fn cname_chains_are_followed_both_from_and_to_provider_names() {
    let cat = catalog("");
    // A provider name pointing into a CDN: the CDN name's addresses are the provider's.
    let m = answer(
        "myres.openai.azure.com.",
        RecordType::A,
        vec![
            cname(
                "myres.openai.azure.com.",
                "myres.privatelink.openai.azure.com.",
            ),
            cname(
                "myres.privatelink.openai.azure.com.",
                "edge-7.trafficmanager.example.",
            ),
            cname("edge-7.trafficmanager.example.", "edge-7.cdn.example."),
            a("edge-7.cdn.example.", "198.51.100.7", 20),
        ],
    );
    let found = provider_addresses(&m, &flags_in(&cat));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].ip.to_string(), "198.51.100.7");
    // An alias of the workload's own pointing at a provider: covered too.
    let m = answer(
        "alias.team.example.",
        RecordType::AAAA,
        vec![
            cname("alias.team.example.", "llm.corp.example."),
            aaaa("llm.corp.example.", "2001:db8::77", 20),
        ],
    );
    let found = provider_addresses(&m, &flags_in(&cat));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].flags, P, "corp owns its addresses");
}

#[test]
fn chains_out_of_order_and_unrelated_names_are_left_alone() {
    let cat = catalog("");
    let m = answer(
        "api.anthropic.com.",
        RecordType::A,
        vec![
            a("c.example.", "198.51.100.3", 20),
            cname("b.example.", "c.example."),
            cname("api.anthropic.com.", "b.example."),
            a("unrelated.example.", "192.0.2.99", 20),
        ],
    );
    let found = provider_addresses(&m, &flags_in(&cat));
    let ips: Vec<String> = found.iter().map(|f| f.ip.to_string()).collect();
    assert_eq!(ips, ["198.51.100.3"], "the whole chain, nothing else");
    assert_eq!(found[0].flags, P, "anthropic owns its addresses");
    let m = answer(
        "www.example.org.",
        RecordType::A,
        vec![a("www.example.org.", "192.0.2.1", 20)],
    );
    assert!(provider_addresses(&m, &flags_in(&cat)).is_empty());
    // A name that merely ends like a provider's is not one.
    let m = answer(
        "evilapi.openai.com.",
        RecordType::A,
        vec![a("evilapi.openai.com.", "192.0.2.2", 20)],
    );
    assert!(provider_addresses(&m, &flags_in(&cat)).is_empty());
}

#[test]
fn https_record_address_hints_count() {
    let cat = catalog("");
    let svcb = SVCB::new(
        1,
        name("."),
        vec![
            (
                SvcParamKey::Ipv4Hint,
                SvcParamValue::Ipv4Hint(IpHint(vec![A(Ipv4Addr::new(198, 51, 100, 44))])),
            ),
            (
                SvcParamKey::Ipv6Hint,
                SvcParamValue::Ipv6Hint(IpHint(vec![AAAA(
                    Ipv6Addr::from_str("2001:db8::44").unwrap(),
                )])),
            ),
        ],
    );
    let m = answer(
        "api.openai.com.",
        RecordType::HTTPS,
        vec![Record::from_rdata(
            name("api.openai.com."),
            60,
            RData::HTTPS(HTTPS(svcb)),
        )],
    );
    let ips: Vec<String> = provider_addresses(&m, &flags_in(&cat))
        .iter()
        .map(|f| f.ip.to_string())
        .collect();
    assert_eq!(ips, ["198.51.100.44", "2001:db8::44"]);
}

#[test]
fn servfail_keeps_id_and_question() {
    let mut q = Message::new();
    q.set_id(777)
        .set_recursion_desired(true)
        .add_query(Query::query(name("api.openai.com."), RecordType::AAAA));
    let sf = Message::from_vec(&servfail(&q.to_vec().unwrap()).unwrap()).unwrap();
    assert_eq!(sf.id(), 777);
    assert_eq!(sf.response_code(), ResponseCode::ServFail);
    assert_eq!(sf.message_type(), MessageType::Response);
    assert_eq!(sf.queries(), q.queries());
    assert!(servfail(b"\x00\x01garbage").is_none());
}

fn proxy(sink: Box<dyn CidrSink>, own: Vec<SocketAddr>) -> Arc<DnsProxy> {
    let set = Arc::new(
        ProviderSet::new(
            AddrSet::new(BTreeMap::new()),
            sink,
            &crate::config::Dns::default(),
        )
        .unwrap(),
    );
    Arc::new(DnsProxy::new(
        catalog(""),
        set,
        0x6777_6179,
        Duration::from_millis(800),
        16,
        own,
    ))
}

#[test]
fn an_unreadable_answer_or_a_failed_write_fails_closed() {
    let p = proxy(Box::new(Shared::default()), vec![]);
    let asker = dns_record("192.0.2.53:53".parse().unwrap());
    assert!(matches!(
        p.inspect(b"not dns at all", &asker),
        Err(DnsError::Unreadable(_))
    ));
    let full = proxy(Box::new(Full), vec![]);
    let m = answer(
        "api.openai.com.",
        RecordType::A,
        vec![a("api.openai.com.", "198.51.100.1", 60)],
    );
    assert!(matches!(
        full.inspect(&m.to_vec().unwrap(), &asker),
        Err(DnsError::Learn(_))
    ));
    // Other names pass even when the set cannot be written.
    let m = answer(
        "www.example.org.",
        RecordType::A,
        vec![a("www.example.org.", "192.0.2.1", 60)],
    );
    assert_eq!(full.inspect(&m.to_vec().unwrap(), &asker).unwrap(), 0);
}

/// A one-shot DNS server on loopback answering every query with `records` for its question.
async fn fake_server(records: Vec<Record>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut m = Message::new();
            m.set_id(q.id())
                .set_message_type(MessageType::Response)
                .add_queries(q.queries().to_vec());
            for r in &records {
                m.add_answer(r.clone());
            }
            let _ = sock.send_to(&m.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

/// What the egress program records for a workload's query to `server`.
fn dns_record(server: SocketAddr) -> ConnRecord {
    ConnRecord {
        orig_dst: OrigDstAddr(server),
        v6_socket: false,
        pid: 1,
        tgid: 1,
        uid: 0,
        gid: 0,
        cgroup_id: 1,
        comm: "dig".into(),
        addr_flags: 0,
        dns: true,
    }
}

#[tokio::test]
async fn the_address_is_in_the_set_before_the_answer_reaches_the_workload() {
    let server = fake_server(vec![
        cname("api.openai.com.", "api.openai.com.cdn.example."),
        a("api.openai.com.cdn.example.", "198.51.100.61", 60),
    ])
    .await;
    let sink = Shared::default();
    let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let local = listen.local_addr().unwrap();
    let p = proxy(Box::new(sink.clone()), vec![local]);
    let flows = Arc::new(MockOrigDst::default());
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    flows.insert(client.local_addr().unwrap(), dns_record(server));
    tokio::spawn(p.clone().serve_udp(listen, local, flows));
    let mut q = Message::new();
    q.set_id(99)
        .set_recursion_desired(true)
        .add_query(Query::query(name("api.openai.com."), RecordType::A));
    client.send_to(&q.to_vec().unwrap(), local).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    // At the moment the answer arrives, the kernel set already has the address.
    let held = sink.current();
    assert_eq!(from, local);
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.id(), 99);
    assert_eq!(m.answers().len(), 2, "the answer passes unchanged");
    assert_eq!(
        held.get(&"198.51.100.61/32".parse::<IpNet>().unwrap()),
        Some(&(P | S))
    );
}

#[tokio::test]
async fn an_unanswered_query_and_a_query_without_record_do_not_pass() {
    // A server that never answers: SERVFAIL after the timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap();
    let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let local = listen.local_addr().unwrap();
    let p = proxy(Box::new(Shared::default()), vec![local]);
    let flows = Arc::new(MockOrigDst::default());
    let asked = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    flows.insert(asked.local_addr().unwrap(), dns_record(server));
    tokio::spawn(p.clone().serve_udp(listen, local, flows));
    let mut q = Message::new();
    q.set_id(5)
        .add_query(Query::query(name("api.openai.com."), RecordType::A));
    let wire = q.to_vec().unwrap();
    asked.send_to(&wire, local).await.unwrap();
    stranger.send_to(&wire, local).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), asked.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    // The datagram that no program redirected gets nothing at all.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), stranger.recv(&mut buf))
            .await
            .is_err()
    );
}

#[test]
fn an_answer_must_repeat_the_id_and_the_question() {
    let mut q = Message::new();
    q.set_id(7)
        .add_query(Query::query(name("api.openai.com."), RecordType::A));
    let query = q.to_vec().unwrap();
    let good = answer("API.openai.COM.", RecordType::A, vec![]);
    let mut good = good;
    good.set_id(7);
    assert!(answers(&query, &good.to_vec().unwrap()), "case may differ");
    let mut other_id = good.clone();
    other_id.set_id(8);
    assert!(!answers(&query, &other_id.to_vec().unwrap()));
    let mut other_name = answer("api.evil.example.", RecordType::A, vec![]);
    other_name.set_id(7);
    assert!(!answers(&query, &other_name.to_vec().unwrap()));
    let mut other_type = answer("api.openai.com.", RecordType::AAAA, vec![]);
    other_type.set_id(7);
    assert!(!answers(&query, &other_type.to_vec().unwrap()));
    // The query itself (QR clear) is no answer.
    assert!(!answers(&query, &query));
}

#[tokio::test]
async fn pooled_sockets_keep_each_clients_id_and_many_queries_in_flight() {
    let server = fake_server(vec![a("api.openai.com.", "198.51.100.71", 60)]).await;
    let p = proxy(Box::new(Shared::default()), vec![]);
    let mut tasks = Vec::new();
    for id in 0..64u16 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut q = Message::new();
            q.set_id(id * 1000)
                .add_query(Query::query(name("api.openai.com."), RecordType::A));
            let a = p
                .exchange_udp(&q.to_vec().unwrap(), server, &dns_record(server))
                .await
                .unwrap();
            Message::from_vec(&a).unwrap().id()
        }));
    }
    for (id, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), id as u16 * 1000);
    }
    assert_eq!(
        p.forwarders.lock().unwrap().len(),
        1,
        "one pool for the server"
    );
}
