use super::*;
use crate::policy::{
    Policy,
    scan::{Action, PolicyConfig, RuleConfig},
};

fn holds(cfg: &HoldConfig) -> Arc<Holds> {
    Arc::new(Holds::new(cfg, ids::Ids::in_memory()))
}

fn req<'a>(id: &'a Identity, excerpt: &str, body_len: usize) -> Request<'a> {
    Request {
        identity: id,
        provider: "openai",
        endpoint: "chat.completions",
        model: None,
        reason: "r".into(),
        excerpt: excerpt.into(),
        body_len,
    }
}

fn user(uid: u32) -> Identity {
    Identity {
        uid,
        ..Default::default()
    }
}

const T: Duration = Duration::from_secs(5);

#[test]
fn triggers() {
    let c = HoldConfig {
        keywords: vec!["Production Database".into()],
        max_prompt_tokens: Some(10),
        ..Default::default()
    };
    assert_eq!(
        c.trigger(&["drop the production database now"], &[])
            .as_deref(),
        Some("keyword `Production Database`")
    );
    assert!(c.trigger(&["short"], &["short"]).is_none());
    assert!(
        c.trigger(&[], &[&"x".repeat(41)])
            .unwrap()
            .contains("limit 10")
    );
}

#[test]
fn limits_of_zero_are_refused_by_validate() {
    let mut c = HoldConfig {
        max_pending: 0,
        ..Default::default()
    };
    assert_eq!(c.validate().unwrap_err().0, "hold.max_pending");
    c.max_pending = 1;
    c.max_bytes = 0;
    assert_eq!(c.validate().unwrap_err().0, "hold.max_bytes");
    c.max_bytes = 1;
    assert!(c.validate().is_ok());
    let d = HoldConfig::default();
    assert_eq!(
        (d.max_pending, d.max_bytes, d.self_approval),
        (256, 64 << 20, false)
    );
}

#[tokio::test]
async fn decide_wait_and_withdraw() {
    let holds = holds(&HoldConfig::default());
    let id = user(1000);
    let (info, w) = holds.hold(req(&id, "e", 10), T).unwrap();
    assert_eq!(holds.list().len(), 1);
    holds
        .decide(
            info.id,
            Decision::Approved {
                by: "root".into(),
                reason: None,
            },
            |_| Ok(()),
        )
        .unwrap();
    assert!(matches!(
        w.wait(Duration::from_secs(1)).await,
        Outcome::Decided(Decision::Approved { .. })
    ));
    assert!(holds.list().is_empty());
    // Withdrawn when the waiter goes away.
    let (info, w) = holds.hold(req(&id, "e", 10), T).unwrap();
    drop(w);
    assert!(holds.list().is_empty());
    assert_eq!(
        holds
            .decide(
                info.id,
                Decision::Approved {
                    by: "root".into(),
                    reason: None
                },
                |_| Ok(())
            )
            .err(),
        Some(HoldError::Unknown(info.id))
    );
    // Timeout.
    let (_, w) = holds.hold(req(&id, "e", 10), T).unwrap();
    assert!(matches!(
        w.wait(Duration::from_millis(20)).await,
        Outcome::TimedOut
    ));
    assert_eq!(holds.lock().bytes, 0, "every hold's bytes given back");
}

/// Decide through [`authorize`], as every caller does.
fn decide_as(
    holds: &Holds,
    cfg: &HoldConfig,
    p: &Principal,
    id: u64,
    d: Decision,
) -> Result<HoldInfo, HoldError> {
    holds.decide(id, d.clone(), |info| {
        let action = match d {
            Decision::Approved { .. } => principal::Action::Approve(info),
            Decision::Denied { .. } => principal::Action::Deny(info),
        };
        authorize(cfg, p, action, true)
            .map(|_| ())
            .map_err(HoldError::from)
    })
}

fn local(uid: u32) -> Principal {
    Principal::Local {
        uid,
        gid: uid,
        name: if uid == 0 {
            "root".into()
        } else {
            format!("u{uid}")
        },
    }
}

#[tokio::test]
async fn nobody_approves_their_own_request_unless_allowed() {
    let cfg = HoldConfig {
        approvers: vec!["u1000".into(), "u1001".into()],
        ..Default::default()
    };
    let holds = holds(&cfg);
    let alice = user(1000);
    let (info, w) = holds.hold(req(&alice, "e", 1), T).unwrap();
    let approve = || Decision::Approved {
        by: "alice".into(),
        reason: None,
    };
    let e = decide_as(&holds, &cfg, &local(1000), info.id, approve()).unwrap_err();
    assert!(
        matches!(e, HoldError::Denied(Denied::SelfApproval { id, .. }) if id == info.id),
        "{e:?}"
    );
    assert!(e.to_string().contains("hold.self_approval"), "{e}");
    // Still pending; somebody else may approve it.
    assert_eq!(holds.list().len(), 1);
    decide_as(&holds, &cfg, &local(1001), info.id, approve()).unwrap();
    assert!(matches!(w.wait(T).await, Outcome::Decided(_)));

    // root's own request is root's own too; denying it is allowed.
    let root = user(0);
    let (info, w) = holds.hold(req(&root, "e", 1), T).unwrap();
    assert!(matches!(
        decide_as(&holds, &cfg, &local(0), info.id, approve()),
        Err(HoldError::Denied(Denied::SelfApproval { .. }))
    ));
    let deny = Decision::Denied {
        by: "root".into(),
        reason: None,
    };
    decide_as(&holds, &cfg, &local(0), info.id, deny.clone()).unwrap();
    assert_eq!(
        match w.wait(T).await {
            Outcome::Decided(d) => Some(d),
            Outcome::TimedOut => None,
        },
        Some(deny)
    );

    // With hold.self_approval = true, root approves its own request.
    let cfg = HoldConfig {
        self_approval: true,
        ..Default::default()
    };
    let holds = self::holds(&cfg);
    let (info, w) = holds.hold(req(&root, "e", 1), T).unwrap();
    decide_as(&holds, &cfg, &local(0), info.id, approve()).unwrap();
    assert!(matches!(
        w.wait(T).await,
        Outcome::Decided(Decision::Approved { .. })
    ));
}

#[test]
fn held_requests_are_bounded_in_count_and_bytes() {
    let holds = holds(&HoldConfig {
        max_pending: 2,
        max_bytes: 100,
        ..Default::default()
    });
    let id = user(5);
    let a = holds.hold(req(&id, "a", 40), T).unwrap();
    let b = holds.hold(req(&id, "b", 40), T).unwrap();
    let e = holds.hold(req(&id, "c", 1), T).err().unwrap();
    assert!(
        e.to_string().contains("2 requests are waiting") && e.to_string().contains("max_pending"),
        "{e}"
    );
    drop(b);
    // One slot free, but 40 + 61 bytes would pass 100.
    let e = holds.hold(req(&id, "c", 61), T).err().unwrap();
    assert!(e.to_string().contains("hold.max_bytes"), "{e}");
    assert_eq!(holds.list().len(), 1, "a refused request is not kept");
    let c = holds.hold(req(&id, "c", 60), T).unwrap();
    // A decided hold gives its bytes back.
    holds
        .decide(
            a.0.id,
            Decision::Approved {
                by: "x".into(),
                reason: None,
            },
            |_| Ok(()),
        )
        .unwrap();
    drop((a, c));
    assert_eq!(holds.lock().bytes, 0);
    // One body bigger than the whole budget is refused on an empty registry.
    assert!(matches!(
        holds.hold(req(&id, "d", 101), T),
        Err(HoldError::Full(_))
    ));
}

#[test]
fn ids_are_not_reused_by_a_restarted_registry() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HoldConfig::default();
    let id = user(1);
    let first = Arc::new(Holds::new(&cfg, ids::Ids::open(dir.path()).unwrap()));
    let (a, _wa) = first.hold(req(&id, "a", 1), T).unwrap();
    drop(first);
    let second = Arc::new(Holds::new(&cfg, ids::Ids::open(dir.path()).unwrap()));
    let (b, wb) = second.hold(req(&id, "b", 1), T).unwrap();
    assert!(b.id > a.id, "{} then {}", a.id, b.id);
    // An approval typed for the old id does not hit the new request.
    assert_eq!(
        second
            .decide(
                a.id,
                Decision::Approved {
                    by: "x".into(),
                    reason: None
                },
                |_| Ok(())
            )
            .err(),
        Some(HoldError::Unknown(a.id))
    );
    drop(wb);
}

#[test]
fn approvers_see_no_secret_and_no_raw_control_characters() {
    // A `hold` rule on a token: its own hit must not be shown either (mask_all), and a
    // `monitor` rule changes nothing.
    let rules = vec![
        RuleConfig {
            name: "gh".into(),
            detector: Some("github-classic-token".into()),
            pattern: None,
            on: vec![Direction::Request],
            action: Action::Hold,
            replacement: None,
            allow: Vec::new(),
            allow_regex: Vec::new(),
            who: None,
        },
        RuleConfig {
            name: "watch".into(),
            detector: None,
            pattern: Some("watched-[0-9]{3}".into()),
            on: vec![Direction::Request],
            action: Action::Monitor,
            replacement: None,
            allow: Vec::new(),
            allow_regex: Vec::new(),
            who: None,
        },
    ];
    let policy = Arc::new(Policy::new(&rules, &PolicyConfig::default()).unwrap());
    let cfg = HoldConfig::default();
    let svc = HoldService {
        holds: holds(&cfg),
        cfg,
        webhook: None,
        policy,
    };
    let token = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
    let mut id = user(7);
    id.comm = "evil\u{1b}[2J".into();
    let mut r = req(
        &id,
        &format!("deploy {token} now\u{1b}]0;pwned\u{7} watched-123\nline two \u{202e}txt"),
        10,
    );
    r.model = Some(format!("gpt-{token}\u{1b}[1A"));
    let (info, _w) = svc.hold(r).unwrap();
    let listed = serde_json::to_string(&svc.holds.list()).unwrap();
    for shown in [
        info.excerpt.as_str(),
        info.model.as_deref().unwrap(),
        info.comm.as_str(),
        listed.as_str(),
    ] {
        assert!(!shown.contains(token), "{shown}");
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{202e}'),
            "{shown}"
        );
    }
    assert_eq!(
        info.excerpt,
        "deploy [MASKED:gh] now\\x1b]0;pwned\\x07 watched-123\nline two \\u{202e}txt"
    );
    assert_eq!(info.comm, "evil\\x1b[2J");
    assert_eq!(info.model.as_deref(), Some("gpt-[MASKED:gh]\\x1b[1A"));
}

#[test]
fn root_always_approves_others_only_when_listed() {
    let may = |approvers: &[&str], uid: u32, gid: u32| {
        let cfg = HoldConfig {
            approvers: approvers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        authorize(
            &cfg,
            &Principal::local(uid, gid),
            principal::Action::List,
            true,
        )
        .is_ok()
    };
    assert!(may(&[], 0, 0));
    assert!(!may(&[], 65534, 65534));
    assert!(may(&["nobody"], 65534, 65534));
    assert!(!may(&["@root"], 65534, 65534));
    assert!(may(&["@root"], 65534, 0));
    // An OIDC group entry gives a local user nothing.
    assert!(!may(&["@oidc:nobody"], 65534, 65534));
}

fn key(n: u8) -> digest::Key {
    let id = user(1000);
    let h = http::HeaderMap::new();
    digest::key(
        &digest::Canonical {
            method: &http::Method::POST,
            path: "/v1/messages",
            query: None,
            headers: &h,
            body: &[n],
        },
        &digest::Caller::from(&id),
    )
}

fn held(a: Admission) -> (HoldInfo, Waiting, bool) {
    match a {
        Admission::Held {
            info,
            waiting,
            joined,
        } => (info, waiting, joined),
        Admission::Bound { hold, .. } => panic!("bound to hold {hold}, wanted a wait"),
    }
}

#[tokio::test]
async fn a_resend_joins_the_pending_hold_and_one_decision_releases_both() {
    let holds = holds(&HoldConfig::default());
    let id = user(1000);
    let (a, wa, joined) = held(holds.admit(req(&id, "e", 10), T, Some(key(1))).unwrap());
    assert!(!joined);
    let (b, wb, joined) = held(holds.admit(req(&id, "e", 10), T, Some(key(1))).unwrap());
    assert!(joined);
    assert_eq!(a.id, b.id);
    assert_eq!(b.waiting, 2);
    // A different request opens a second hold; no key never joins.
    let (c, wc, joined) = held(holds.admit(req(&id, "e", 10), T, Some(key(2))).unwrap());
    assert!(!joined && c.id != a.id);
    let (d, wd) = holds.hold(req(&id, "e", 10), T).unwrap();
    assert!(d.id != a.id && d.id != c.id);
    let list = holds.list();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().find(|h| h.id == a.id).unwrap().waiting, 2);
    assert_eq!(holds.lock().bytes, 40);
    // One leaves: the hold stays for the other.
    drop(wa);
    assert_eq!(
        holds.list().iter().find(|h| h.id == a.id).unwrap().waiting,
        1
    );
    let (_, wa2, joined) = held(holds.admit(req(&id, "e", 10), T, Some(key(1))).unwrap());
    assert!(joined);
    holds
        .decide(
            a.id,
            Decision::Approved {
                by: "root".into(),
                reason: None,
            },
            |_| Ok(()),
        )
        .unwrap();
    for w in [wb, wa2] {
        assert!(matches!(
            w.wait(T).await,
            Outcome::Decided(Decision::Approved { .. })
        ));
    }
    drop((wc, wd));
    assert!(holds.list().is_empty());
    assert_eq!(holds.lock().bytes, 0);
}

#[tokio::test]
async fn decisions_bind_to_the_key_until_the_ttl_and_timeouts_do_not() {
    let holds = holds(&HoldConfig {
        approval_ttl: Duration::from_millis(300),
        ..Default::default()
    });
    let id = user(1000);
    let (a, w, _) = held(holds.admit(req(&id, "e", 10), T, Some(key(1))).unwrap());
    holds
        .decide(
            a.id,
            Decision::Approved {
                by: "bob".into(),
                reason: None,
            },
            |_| Ok(()),
        )
        .unwrap();
    drop(w);
    match holds.admit(req(&id, "e", 10), T, Some(key(1))).unwrap() {
        Admission::Bound { hold, decision } => {
            assert_eq!(hold, a.id);
            assert_eq!(
                decision,
                Decision::Approved {
                    by: "bob".into(),
                    reason: None
                }
            );
        }
        Admission::Held { .. } => panic!("an approved request was held again within the ttl"),
    }
    assert!(holds.list().is_empty(), "nothing pending");
    // Another request is not covered by it.
    let (_, w2, joined) = held(holds.admit(req(&id, "e", 10), T, Some(key(2))).unwrap());
    assert!(!joined);
    drop(w2);
    // A denial binds too.
    let (b, w, _) = held(holds.admit(req(&id, "e", 10), T, Some(key(3))).unwrap());
    let deny = Decision::Denied {
        by: "bob".into(),
        reason: Some("no".into()),
    };
    holds.decide(b.id, deny.clone(), |_| Ok(())).unwrap();
    drop(w);
    assert!(matches!(
        holds.admit(req(&id, "e", 10), T, Some(key(3))).unwrap(),
        Admission::Bound { decision, .. } if decision == deny
    ));
    // After the ttl: held again, under a new id.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (again, w, joined) = held(holds.admit(req(&id, "e", 10), T, Some(key(1))).unwrap());
    assert!(!joined && again.id > b.id);
    // A timeout binds nothing, and a hold past its deadline is not joined.
    let short = Duration::from_millis(30);
    let (t, wt, _) = held(holds.admit(req(&id, "e", 10), short, Some(key(4))).unwrap());
    assert!(matches!(w.wait(short).await, Outcome::TimedOut));
    let (t2, wt2, joined) = held(holds.admit(req(&id, "e", 10), T, Some(key(4))).unwrap());
    assert!(!joined && t2.id != t.id, "joined a hold past its deadline");
    assert!(matches!(wt.wait(T).await, Outcome::TimedOut));
    drop(wt2);
    assert!(holds.list().is_empty());
    // ttl 0: decisions are not reused.
    let holds = self::holds(&HoldConfig {
        approval_ttl: Duration::ZERO,
        ..Default::default()
    });
    let (a, w, _) = held(holds.admit(req(&id, "e", 10), T, Some(key(1))).unwrap());
    holds
        .decide(
            a.id,
            Decision::Approved {
                by: "bob".into(),
                reason: None,
            },
            |_| Ok(()),
        )
        .unwrap();
    drop(w);
    let (_, _w, joined) = held(holds.admit(req(&id, "e", 10), T, Some(key(1))).unwrap());
    assert!(!joined);
}

#[test]
fn joined_requests_count_against_the_bounds() {
    let holds = holds(&HoldConfig {
        max_pending: 2,
        max_bytes: 100,
        ..Default::default()
    });
    let id = user(5);
    let _a = holds.admit(req(&id, "a", 40), T, Some(key(1))).unwrap();
    let _b = holds.admit(req(&id, "a", 40), T, Some(key(1))).unwrap();
    let e = holds
        .admit(req(&id, "a", 1), T, Some(key(1)))
        .err()
        .unwrap();
    assert!(e.to_string().contains("max_pending"), "{e}");
    assert_eq!(holds.list()[0].waiting, 2);
}

#[test]
fn keepalive_and_approval_ttl_are_validated() {
    let mut c = HoldConfig {
        keepalive: Duration::ZERO,
        ..Default::default()
    };
    assert_eq!(c.validate().unwrap_err().0, "hold.keepalive");
    c.keepalive = c.timeout;
    let (k, why) = c.validate().unwrap_err();
    assert_eq!(k, "hold.keepalive");
    assert!(why.contains("below hold.timeout"), "{why}");
    c.keepalive = Duration::from_secs(15);
    c.approval_ttl = Duration::from_secs(2 * 86_400);
    assert_eq!(c.validate().unwrap_err().0, "hold.approval_ttl");
    c.approval_ttl = Duration::ZERO;
    assert!(c.validate().is_ok());
    let d = HoldConfig::default();
    assert_eq!(
        (d.keepalive, d.approval_ttl),
        (Duration::from_secs(15), Duration::from_secs(600))
    );
}
