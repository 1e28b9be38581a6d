use super::*;

fn err(text: &str) -> String {
    Config::parse(text, "t.toml")
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn embedded_defaults_parse_and_match_code_defaults() {
    let d = Config::load(None).expect("defaults are valid");
    assert_eq!(d.listen.addr, "127.0.0.1:15001".parse().unwrap());
    assert_eq!(d.redirect.ports, vec![443]);
    assert_eq!(d.redirect.pin_dir, PathBuf::from("/sys/fs/bpf/gateway"));
    assert!(d.builtin_providers);
    assert_eq!(d.dns.grace, Duration::from_secs(600));
}

#[test]
fn the_design_example_keys_parse() {
    let c = Config::parse(
        r#"
        state_dir = "/var/lib/gateway"
        [listen]
        addr = "127.0.0.1:15001"
        [redirect]
        cgroup = "/proc"
        ports = [443, 8443]
        [[provider]]
        name = "openai"
        hosts = ["api.openai.com"]
        addrs = ["127.10.0.1/32"]
        key = "openai"
        "#,
        "t.toml",
    );
    // /proc is not a cgroup2 directory: the error names the key.
    let e = c.expect_err("not cgroup2").to_string();
    assert!(
        e.contains("`redirect.cgroup`") && e.contains("not on a cgroup v2"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let e = err("[listen]\naddr = \"127.0.0.1:1\"\nbogus = 1\n");
    assert!(e.contains("bogus"), "{e}");
    let e = err("stat_dir = \"/x\"\n");
    assert!(e.contains("stat_dir"), "{e}");
}

#[test]
fn bad_cidrs_are_named_with_their_index() {
    let e = err("[[provider]]\nname = \"openai\"\naddrs = [\"127.10.0.1/32\", \"10.0.0.300/8\"]\n");
    assert!(
        e.contains("provider[0].addrs[1]") && e.contains("10.0.0.300/8"),
        "{e}"
    );
    let e = err("[[provider]]\nname = \"openai\"\naddrs = [\"10.0.0.0/33\"]\n");
    assert!(e.contains("provider[0].addrs[0]"), "{e}");
}

#[test]
fn missing_cgroup_is_named() {
    let e = err("[redirect]\ncgroup = \"/sys/fs/cgroup/does-not-exist-gw\"\n");
    assert!(
        e.contains("redirect.cgroup") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn other_bad_values() {
    assert!(err("[redirect]\nports = []\n").contains("redirect.ports"));
    assert!(err("[redirect]\nports = [0]\n").contains("redirect.ports[0]"));
    assert!(err("[redirect]\nports = [70000]\n").contains("ports"));
    assert!(err("[listen]\naddr = \"[::1]:1\"\n").contains("listen.addr"));
    assert!(err("[listen]\naddr = \"nonsense\"\n").contains("addr"));
    assert!(err("state_dir = \"relative\"\n").contains("state_dir"));
    assert!(err("[dns]\ngrace = \"ten minutes\"\n").contains("duration"));
    assert!(err("[[provider]]\nname = \"x\"\n").contains("provider[0].hosts"));
    assert!(
        err("[[provider]]\nname = \"openai\"\n[[provider]]\nname = \"openai\"\n").contains("twice")
    );
    assert!(
        err("[[provider]]\nname = \"x\"\nhosts = [\"not a host\"]\n")
            .contains("provider[0].hosts[0]")
    );
    assert!(err("[redirect]\nbypass_mark = 0\n").contains("bypass_mark"));
    assert!(err("this is not toml").contains("t.toml"));
}

#[test]
fn addr6_can_be_disabled() {
    let c = Config::parse("[listen]\naddr6 = \"\"\n", "t").unwrap();
    assert_eq!(c.listen.addr6, None);
}

#[test]
fn durations() {
    assert_eq!(dur::parse("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(dur::parse("90d").unwrap(), Duration::from_secs(90 * 86_400));
    assert!(dur::parse("5").is_err());
    assert!(dur::parse("m").is_err());
    assert!(dur::parse("99999999999999999999d").is_err());
}

#[test]
fn rules_parse_and_bad_ones_are_named() {
    let c = Config::parse(
        r#"
        [[rule]]
        name = "customer-id"
        pattern = "CUST-[0-9]{8}"
        on = ["request", "response"]
        action = "mask"
        [[rule]]
        name = "keys"
        detector = "all"
        action = "block"
        on = ["request"]
        match = { user = "contractor" }
        [policy]
        allow = ["AKIAIOSFODNN7EXAMPLE"]
        "#,
        "t.toml",
    )
    .expect("valid rules");
    assert_eq!(c.rules.len(), 2);
    assert_eq!(c.rules[1].action, crate::policy::scan::Action::Block);
    let e = err(
        "[[rule]]\nname = \"a\"\npattern = \"x\"\n[[rule]]\nname = \"greedy\"\npattern = \"s-.+\"\n",
    );
    assert!(
        e.contains("rule[1] (greedy)") && e.contains("unbounded"),
        "{e}"
    );
    let e = err("[[rule]]\nname = \"d\"\ndetector = \"nope\"\n");
    assert!(
        e.contains("rule[0] (d)") && e.contains("no built-in detector"),
        "{e}"
    );
    let e = err("[[rule]]\nname = \"d\"\npattern = \"x\"\naction = \"explode\"\n");
    assert!(e.contains("explode"), "{e}");
    let e = err("[policy]\nallow_regex = [\"(\"]\n");
    assert!(e.contains("policy.allow_regex[0]"), "{e}");
}

#[test]
fn the_example_config_parses_with_its_commented_policy_enabled() {
    let text = include_str!("../../../deploy/config/example.toml");
    Config::parse(text, "example.toml").expect("example as shipped");
    // Uncomment the policy section: it must be valid too.
    let (head, tail) = text.split_once("# Policy.").expect("policy section");
    let enabled: String = tail
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = Config::parse(&format!("{head}{enabled}"), "example.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.rules.len(), 2);
    assert_eq!(c.hold.approvers, vec!["alice", "@llm-approvers"]);
    assert_eq!(
        c.oidc.as_ref().map(|o| o.audiences()),
        Some(vec!["llm-gateway"])
    );
    assert_eq!(c.groups.len(), 2);
}

#[test]
fn the_shared_vm_example_parses_with_team_keys_and_a_contractor_hold() {
    let text = include_str!("../../../deploy/config/shared-vm.toml");
    let c = Config::parse(text, "shared-vm.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.vault.selects.len(), 2);
    assert_eq!(c.vault.selects[0].group.as_deref(), Some("team-a"));
    let hold = c
        .rules
        .iter()
        .find(|r| r.name == "contractors-wait")
        .unwrap();
    assert_eq!(hold.action, crate::policy::scan::Action::Hold);
    let id = crate::redirect::identity::Identity::default();
    let ctx = crate::policy::scan::Ctx {
        dir: crate::policy::scan::Direction::Request,
        id: &id,
    };
    let prompt = b"a long prompt\nwith lines";
    // Nobody here is in `contractors`: the rule does not apply.
    let s = crate::policy::scan::Scanner::new(&c.rules, &c.policy).unwrap();
    assert!(s.find(prompt, 0, ctx).is_empty());
    // For a contractor: one hit per prompt, whatever its length.
    let mut everyone = hold.clone();
    everyone.who = None;
    let s = crate::policy::scan::Scanner::new(&[everyone], &c.policy).unwrap();
    assert_eq!(s.find(prompt, 0, ctx).len(), 1);
}

#[test]
fn oidc_approvers_groups_and_workload_groups_are_validated() {
    let oidc = "[oidc]\nissuer = \"https://idp.example\"\nclient_id = \"gw\"\n";
    // @oidc: approvers need [oidc]; unknown prefixes are refused.
    let e = err("[hold]\napprovers = [\"@oidc:llm-approvers\"]\n");
    assert!(
        e.contains("hold.approvers[0]") && e.contains("[oidc]"),
        "{e}"
    );
    let e = err(&format!("{oidc}[hold]\napprovers = [\"saml:x\"]\n"));
    assert!(
        e.contains("hold.approvers[0]") && e.contains("unknown kind"),
        "{e}"
    );
    let c = Config::parse(
        &format!(
            "{oidc}[hold]\napprovers = [\"@oidc:llm-approvers\", \"oidc:sub:00u1\", \"root\"]\n"
        ),
        "t",
    )
    .unwrap();
    assert_eq!(c.oidc.unwrap().audiences(), ["gw"]);
    let e = err("[oidc]\nissuer = \"http://idp.example\"\nclient_id = \"gw\"\n");
    assert!(e.contains("oidc.issuer") && e.contains("https"), "{e}");
    // A rule's workload group must be defined in [groups].
    let rule = "[[rule]]\nname = \"r\"\npattern = \"X-[0-9]{4}\"\naction = \"block\"\nmatch.workload_group = \"ci\"\n";
    let e = err(rule);
    assert!(
        e.contains("match.workload_group") && e.contains("ci"),
        "{e}"
    );
    let c = Config::parse(
        &format!("[groups]\nci = [\"unit:ci@*.service\"]\n{rule}"),
        "t",
    )
    .unwrap();
    assert_eq!(c.groups["ci"], vec!["unit:ci@*.service"]);
    let e = err("[groups]\nci = [\"unknown:x\"]\n");
    assert!(e.contains("groups.ci[0]"), "{e}");
}

/// A node has one name: `[fleet] node`, else `[ca] node`, else the host name; two different
/// names are refused, and a `ca.node` the fleet would take must be a subject token.
#[test]
fn the_node_has_one_name_for_the_fleet_the_ca_and_exports() {
    let fleet = "[fleet]\nnats = \"nats://127.0.0.1:4222\"\n";
    let c = Config::parse(&format!("{fleet}node = \"n1\"\n"), "t").unwrap();
    assert_eq!(c.node_name(), "n1");
    let c = Config::parse(&format!("[ca]\nnode = \"n2\"\n{fleet}"), "t").unwrap();
    assert_eq!(c.node_name(), "n2");
    let c = Config::parse("[ca]\nnode = \"n3\"\n", "t").unwrap();
    assert_eq!(c.node_name(), "n3");
    let c = Config::parse(&format!("[ca]\nnode = \"n1\"\n{fleet}node = \"n1\"\n"), "t").unwrap();
    assert_eq!(c.node_name(), "n1");
    let e = err(&format!("[ca]\nnode = \"other\"\n{fleet}node = \"n1\"\n"));
    assert!(e.contains("ca.node") && e.contains("one name"), "{e}");
    let e = err(&format!("[ca]\nnode = \"a.b c\"\n{fleet}"));
    assert!(e.contains("ca.node"), "{e}");
    assert_eq!(
        Config::parse("", "t").unwrap().node_name(),
        crate::fleet::config::host_node()
    );
}
