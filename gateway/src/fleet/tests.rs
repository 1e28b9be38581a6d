//! The fleet handle on a single node (no bus): listing and deciding local holds.

use std::sync::Arc;

use super::*;
use crate::{
    hold::{Request, ids::Ids},
    redirect::identity::Identity,
};

fn fleet(approvers: &[&str]) -> (Fleet, Arc<Holds>) {
    let cfg = HoldConfig {
        approvers: approvers.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let holds = Arc::new(Holds::new(&cfg, Ids::in_memory()));
    let f = Fleet::new(
        Some(&FleetConfig {
            nats: "nats://127.0.0.1:1".into(),
            node: Some("node-a".into()),
            ..Default::default()
        }),
        "node-a".into(),
        holds.clone(),
        cfg,
        auth::Auth::default(),
    );
    (f, holds)
}

fn hold(holds: &Arc<Holds>, uid: u32) -> (HoldInfo, crate::hold::Waiting) {
    let id = Identity {
        uid,
        comm: "curl".into(),
        unit: Some("ci.service".into()),
        ..Default::default()
    };
    holds
        .hold(
            Request {
                identity: &id,
                provider: "openai",
                endpoint: "chat",
                model: Some("gpt-4o".into()),
                reason: "keyword".into(),
                excerpt: "[masked] text".into(),
                body_len: 10,
            },
            std::time::Duration::from_secs(60),
        )
        .unwrap()
}

#[tokio::test]
async fn local_holds_are_listed_with_their_fleet_id_and_decided_by_it() {
    let (f, holds) = fleet(&[]);
    let (info, waiting) = hold(&holds, 1000);
    let list = f.pending();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].fleet_id, format!("node-a:{}", info.id));
    assert_eq!(list[0].node, "node-a");
    assert_eq!(list[0].hold.unit.as_deref(), Some("ci.service"));
    let j = &f.pending_json()[0];
    assert_eq!(j["id"], format!("node-a:{}", info.id));
    assert_eq!(j["hold"], info.id);
    assert_eq!(j["node"], "node-a");
    // A non-approver is refused and the hold stays.
    let e = f
        .decide(
            &list[0].fleet_id,
            Verdict::Approve,
            None,
            Proof::local(4242, 4242),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), 403, "{e}");
    assert_eq!(f.pending().len(), 1);
    // Root may, by fleet id or by the bare number.
    let d = f
        .decide(
            &info.id.to_string(),
            Verdict::Approve,
            None,
            Proof::local(0, 0),
        )
        .await
        .unwrap();
    assert_eq!(d.fleet_id, format!("node-a:{}", info.id));
    assert!(f.pending().is_empty());
    match waiting.wait(std::time::Duration::from_secs(1)).await {
        crate::hold::Outcome::Decided(Decision::Approved { .. }) => {}
        _ => panic!("the waiting request was not approved"),
    }
    // Gone now.
    let e = f
        .decide(&d.fleet_id, Verdict::Deny, None, Proof::local(0, 0))
        .await
        .unwrap_err();
    assert_eq!(e.status(), 404, "{e}");
}

#[tokio::test]
async fn a_hold_on_another_node_needs_a_signed_in_approver_and_a_bus() {
    let (f, _holds) = fleet(&[]);
    // Local root does not count for another node's hold.
    let e = f
        .decide("node-b:3", Verdict::Approve, None, Proof::local(0, 0))
        .await
        .unwrap_err();
    assert!(matches!(e, FleetError::Forbidden(_)), "{e}");
    assert!(e.to_string().contains("gateway login"), "{e}");
    // A signed-in approver without a bus: not sent, nothing approved.
    let alice = Proof {
        principal: Principal::Oidc {
            issuer: "https://idp".into(),
            subject: "sub-alice".into(),
            name: None,
            email: None,
            username: Some("alice".into()),
            groups: vec!["llm-approvers".into()],
            expires: u64::MAX,
        },
        token: Some(IdToken("x.y.z".into())),
    };
    let e = f
        .decide("node-b:3", Verdict::Approve, None, alice.clone())
        .await
        .unwrap_err();
    assert_eq!(e.status(), 503, "{e}");
    // The same principal without its token cannot reach another node either.
    let e = f
        .decide(
            "node-b:3",
            Verdict::Approve,
            None,
            Proof {
                token: None,
                ..alice
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), 403, "{e}");
    // A token arriving from the bus, on a node without [oidc]: refused.
    let e = f.auth().verify(&IdToken("x.y.z".into())).await.unwrap_err();
    assert_eq!(e.status(), 403, "{e}");
    assert!(!format!("{:?}", IdToken("secret-token".into())).contains("secret"));
    let e = f
        .decide("node-a:x", Verdict::Approve, None, Proof::local(0, 0))
        .await
        .unwrap_err();
    assert_eq!(e.status(), 400);
}

#[test]
fn hold_events_follow_a_hold_from_opened_to_decided_or_gone() {
    let (f, holds) = fleet(&[]);
    let mut rx = holds.events();
    let (info, w) = hold(&holds, 1);
    assert!(matches!(rx.try_recv(), Ok(crate::hold::HoldEvent::Opened(i)) if i.id == info.id));
    drop(w);
    assert!(matches!(rx.try_recv(), Ok(crate::hold::HoldEvent::Gone(i)) if i.id == info.id));
    let (info, _w) = hold(&holds, 1);
    let _ = rx.try_recv();
    holds
        .decide(
            info.id,
            Decision::Denied {
                by: "root".into(),
                reason: None,
            },
            |_| Ok(()),
        )
        .unwrap();
    assert!(matches!(rx.try_recv(), Ok(crate::hold::HoldEvent::Decided(i, _)) if i.id == info.id));
    assert!(f.pending().is_empty());
}
