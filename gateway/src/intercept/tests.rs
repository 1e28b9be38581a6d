//! The connection decision, case by case (the end-to-end tests drive the same cases through the
//! real programs and a fake provider).

use super::*;
use crate::config::Config;
use hello::ClientHello;

fn catalog() -> Catalog {
    let cfg = Config::parse("state_dir = \"/tmp/x\"\nbuiltin_providers = true\n", "test").unwrap();
    Catalog::from_config(&cfg)
}

fn hello(sni: Option<&str>, ech: bool) -> Parsed {
    Parsed::Hello(ClientHello {
        sni: sni.map(str::to_string),
        alpn: vec![],
        ech,
    })
}

fn d(p: &Parsed, empty: bool, shared: bool, exempt: bool) -> Decision {
    decide(p, empty, shared, exempt, &catalog(), Duration::from_secs(5))
}

fn refused(dec: &Decision) -> bool {
    matches!(dec, Decision::Refuse { .. })
}

#[test]
fn a_provider_name_is_intercepted_on_any_provider_address() {
    for shared in [false, true] {
        let dec = d(&hello(Some("api.openai.com"), false), false, shared, false);
        assert!(
            matches!(&dec, Decision::Intercept(p) if p.name == "openai"),
            "{dec:?}"
        );
        let dec = d(
            &hello(Some("myres.openai.azure.com"), false),
            false,
            shared,
            false,
        );
        assert!(matches!(&dec, Decision::Intercept(p) if p.name == "azure-openai"));
        // ECH whose outer name is the provider's: we terminate it; the client sees no ECH.
        let dec = d(
            &hello(Some("api.anthropic.com"), true),
            false,
            shared,
            false,
        );
        assert!(matches!(dec, Decision::Intercept(_)));
    }
}

#[test]
fn on_a_providers_own_address_nothing_else_is_spliced() {
    for p in [
        hello(Some("www.example.org"), false),
        hello(None, false),
        hello(Some("160.79.104.10"), false),
        hello(Some("2607:6bc0::10"), false),
        hello(Some("api.openai.com.evil.example"), false),
    ] {
        let dec = d(&p, false, false, false);
        assert!(
            matches!(
                dec,
                Decision::Refuse {
                    alert: Some(ALERT_UNRECOGNIZED_NAME),
                    ..
                }
            ),
            "{p:?}: {dec:?}"
        );
    }
}

#[test]
fn on_a_shared_address_other_sites_are_spliced_but_ech_and_non_tls_are_not() {
    assert!(matches!(
        d(&hello(Some("www.example.org"), false), false, true, false),
        Decision::Splice
    ));
    assert!(matches!(
        d(&hello(None, false), false, true, false),
        Decision::Splice
    ));
    let dec = d(&hello(Some("cloudflare-ech.com"), true), false, true, false);
    assert!(
        matches!(
            dec,
            Decision::Refuse {
                alert: Some(ALERT_ACCESS_DENIED),
                ..
            }
        ),
        "{dec:?}"
    );
    for shared in [false, true] {
        // Silent past the timeout, plain text, broken TLS: closed, never spliced.
        let silent = d(&Parsed::NotTls, true, shared, false);
        assert!(
            matches!(&silent, Decision::Refuse { why, alert: None } if why.contains("no TLS ClientHello")),
            "{silent:?}"
        );
        assert!(refused(&d(&Parsed::NotTls, false, shared, false)));
        assert!(refused(&d(&Parsed::Malformed("bad"), false, shared, false)));
        assert!(refused(&d(&Parsed::Incomplete, false, shared, false)));
    }
}

#[test]
fn an_exempt_pod_is_passed_through_but_still_needs_tls() {
    assert!(matches!(
        d(&hello(Some("api.openai.com"), false), false, false, true),
        Decision::Exempt(Some(_))
    ));
    assert!(matches!(
        d(&hello(None, false), false, false, true),
        Decision::Exempt(None)
    ));
    assert!(refused(&d(&Parsed::NotTls, true, false, true)));
}
