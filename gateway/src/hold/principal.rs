//! Who is asking the admin API, and the ONE decision of what they may do with holds.
//!
//! Every caller — the Unix admin socket, the HTTPS admin API, the approval web page, a decision
//! arriving over the fleet bus — builds a [`Principal`] (a local peer from its socket
//! credentials, or an identity whose OIDC ID token [`crate::oidc::Verifier`] verified) and asks
//! [`authorize`]. Nothing else decides who may list, approve or deny a hold.
//!
//! `hold.approvers` entries: `NAME` (a local user), `@GROUP` (a local Unix group), `@oidc:GROUP`
//! (an OIDC group, from the ID token's groups claim) and `oidc:sub:SUBJECT` (one OIDC subject).
//! Local rights (root, local users and groups) count only for holds on this node; a hold held
//! by another node of the fleet needs an OIDC identity in an approver group.

use serde::{Deserialize, Serialize};

use super::{HoldConfig, HoldInfo};

/// A caller of the admin API, as far as it has been proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    /// A local process, from its Unix socket peer credentials (SO_PEERCRED).
    Local { uid: u32, gid: u32, name: String },
    /// A person whose ID token was verified: signature, issuer, audience, lifetime.
    Oidc {
        issuer: String,
        subject: String,
        /// `name` claim.
        name: Option<String>,
        email: Option<String>,
        /// The claim `oidc.username_claim` names (default `preferred_username`): compared with
        /// a hold's local user name to refuse self-approval.
        username: Option<String>,
        /// The claim `oidc.groups_claim` names (default `groups`).
        groups: Vec<String>,
        /// The token's `exp`, Unix seconds.
        expires: u64,
    },
}

impl Principal {
    /// The local peer with this uid and primary gid (the user name looked up, or `uid N`).
    pub fn local(uid: u32, gid: u32) -> Self {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid {uid}"));
        Principal::Local { uid, gid, name }
    }

    /// How decisions name this principal (`approval.by` in the journal): the local user name,
    /// or `oidc:` and the person's user name, e-mail, name or subject (first one present).
    pub fn label(&self) -> String {
        match self {
            Principal::Local { name, .. } => name.clone(),
            Principal::Oidc {
                subject,
                name,
                email,
                username,
                ..
            } => {
                let who = username
                    .as_deref()
                    .or(email.as_deref())
                    .or(name.as_deref())
                    .unwrap_or(subject);
                format!("oidc:{}", super::printable(who, true))
            }
        }
    }
}

/// What a principal wants to do.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// See pending holds (masked excerpts).
    List,
    /// Let this held request go to the provider.
    Approve(&'a HoldInfo),
    /// Refuse this held request.
    Deny(&'a HoldInfo),
}

/// Why a principal may not do what it asked; the message is what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "{who} is not an approver (hold.approvers lists users, @groups, @oidc:GROUP and \
         oidc:sub:SUBJECT; root always is, on its own node)"
    )]
    NotApprover { who: String },
    #[error(
        "{who} is a local identity: local rights count only on the node that holds the \
         request; sign in with `gateway login` (an OIDC identity in an approver group) to \
         decide holds of other nodes"
    )]
    NotLocal { who: String },
    #[error(
        "hold {id} is a request made by {requester}, your own: nobody approves their own request \
         (hold.self_approval = false); ask another approver"
    )]
    SelfApproval { id: u64, requester: String },
}

/// One `hold.approvers` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approver<'a> {
    User(&'a str),
    UnixGroup(&'a str),
    OidcGroup(&'a str),
    OidcSubject(&'a str),
}

impl<'a> Approver<'a> {
    /// Parse an entry; an unknown `prefix:` or an empty name is an error (the reason).
    pub fn parse(entry: &'a str) -> Result<Self, String> {
        if let Some(g) = entry.strip_prefix("@oidc:") {
            return nonempty(g, entry).map(Approver::OidcGroup);
        }
        if let Some(s) = entry.strip_prefix("oidc:sub:") {
            return nonempty(s, entry).map(Approver::OidcSubject);
        }
        if entry.contains(':') {
            return Err(format!(
                "`{entry}`: unknown kind of approver; use NAME, @GROUP, @oidc:GROUP or \
                 oidc:sub:SUBJECT"
            ));
        }
        match entry.strip_prefix('@') {
            Some(g) => nonempty(g, entry).map(Approver::UnixGroup),
            None => nonempty(entry, entry).map(Approver::User),
        }
    }
}

fn nonempty<'a>(name: &'a str, entry: &str) -> Result<&'a str, String> {
    if name.trim().is_empty() {
        Err(format!("`{entry}`: empty name"))
    } else {
        Ok(name)
    }
}

/// May `p` do `action`? `hold_is_local`: the hold (or, for [`Action::List`], the holds listed)
/// is on this node. `Ok` carries the name decisions are recorded under.
///
/// - root and local `hold.approvers` (users, `@groups`): only for local holds;
/// - an OIDC principal: when a `@oidc:GROUP` entry names one of its groups or an
///   `oidc:sub:SUBJECT` entry its subject, on any node;
/// - approving one's own request (same uid; for OIDC, the user name claim equal to the hold's
///   user name) is refused unless `hold.self_approval`; denying is always allowed.
pub fn authorize(
    cfg: &HoldConfig,
    p: &Principal,
    action: Action<'_>,
    hold_is_local: bool,
) -> Result<String, Denied> {
    let who = p.label();
    let approver = match p {
        Principal::Local { uid, gid, name } => {
            let listed = *uid == 0
                || cfg.approvers.iter().any(|a| match Approver::parse(a) {
                    Ok(Approver::User(u)) => u == name,
                    Ok(Approver::UnixGroup(g)) => in_unix_group(g, *gid, name),
                    _ => false,
                });
            if listed && !hold_is_local {
                return Err(Denied::NotLocal { who });
            }
            listed
        }
        Principal::Oidc {
            subject, groups, ..
        } => cfg.approvers.iter().any(|a| match Approver::parse(a) {
            Ok(Approver::OidcGroup(g)) => groups.iter().any(|have| have == g),
            Ok(Approver::OidcSubject(s)) => s == subject,
            _ => false,
        }),
    };
    if !approver {
        return Err(Denied::NotApprover { who });
    }
    if let Action::Approve(hold) = action
        && !cfg.self_approval
        && own_request(p, hold)
    {
        return Err(Denied::SelfApproval {
            id: hold.id,
            requester: match &hold.user {
                Some(u) => format!("{} (uid {})", super::printable(u, true), hold.uid),
                None => format!("uid {}", hold.uid),
            },
        });
    }
    Ok(who)
}

/// Is `hold` a request of `p` itself?
fn own_request(p: &Principal, hold: &HoldInfo) -> bool {
    match p {
        Principal::Local { uid, .. } => *uid == hold.uid,
        Principal::Oidc { username, .. } => {
            username.is_some() && username.as_deref() == hold.user.as_deref()
        }
    }
}

fn in_unix_group(group: &str, gid: u32, name: &str) -> bool {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => g.gid.as_raw() == gid || g.mem.iter().any(|m| m == name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(uid: u32, user: &str) -> HoldInfo {
        HoldInfo {
            id: 7,
            created: 0,
            expires: 0,
            pid: 1,
            uid,
            user: Some(user.into()),
            comm: "curl".into(),
            cgroup: None,
            provider: "openai".into(),
            endpoint: "/v1/chat/completions".into(),
            model: None,
            reason: "keyword".into(),
            excerpt: String::new(),
            waiting: 1,
        }
    }

    fn oidc(user: &str, groups: &[&str]) -> Principal {
        Principal::Oidc {
            issuer: "https://idp".into(),
            subject: format!("sub-{user}"),
            name: None,
            email: Some(format!("{user}@example.org")),
            username: Some(user.into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            expires: 0,
        }
    }

    fn cfg(approvers: &[&str]) -> HoldConfig {
        HoldConfig {
            approvers: approvers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn oidc_groups_and_subjects_decide_on_any_node() {
        let c = cfg(&["@oidc:llm-approvers", "oidc:sub:sub-carol"]);
        let h = hold(1000, "dev");
        let alice = oidc("alice", &["staff", "llm-approvers"]);
        assert_eq!(
            authorize(&c, &alice, Action::Approve(&h), false).as_deref(),
            Ok("oidc:alice")
        );
        assert!(authorize(&c, &alice, Action::List, true).is_ok());
        let bob = oidc("bob", &["staff"]);
        assert!(matches!(
            authorize(&c, &bob, Action::List, true),
            Err(Denied::NotApprover { .. })
        ));
        assert!(authorize(&c, &oidc("carol", &[]), Action::Deny(&h), false).is_ok());
        // A Unix group of the same name gives an OIDC principal nothing, and the reverse.
        let unix = cfg(&["@llm-approvers", "alice"]);
        assert!(authorize(&unix, &alice, Action::List, true).is_err());
    }

    #[test]
    fn local_rights_count_only_on_the_holding_node() {
        let c = cfg(&["@oidc:llm-approvers"]);
        let root = Principal::Local {
            uid: 0,
            gid: 0,
            name: "root".into(),
        };
        let h = hold(1000, "dev");
        assert!(authorize(&c, &root, Action::Approve(&h), true).is_ok());
        assert!(matches!(
            authorize(&c, &root, Action::Approve(&h), false),
            Err(Denied::NotLocal { .. })
        ));
        assert!(matches!(
            authorize(&c, &root, Action::List, false),
            Err(Denied::NotLocal { .. })
        ));
    }

    #[test]
    fn an_oidc_user_does_not_approve_the_request_of_the_same_user_name() {
        let c = cfg(&["@oidc:llm-approvers"]);
        let alice = oidc("alice", &["llm-approvers"]);
        let own = hold(1000, "alice");
        assert!(matches!(
            authorize(&c, &alice, Action::Approve(&own), true),
            Err(Denied::SelfApproval { id: 7, .. })
        ));
        assert!(authorize(&c, &alice, Action::Deny(&own), true).is_ok());
        let c = HoldConfig {
            self_approval: true,
            ..c
        };
        assert!(authorize(&c, &alice, Action::Approve(&own), true).is_ok());
    }

    #[test]
    fn approver_entries_parse_and_unknown_prefixes_are_refused() {
        assert_eq!(Approver::parse("alice"), Ok(Approver::User("alice")));
        assert_eq!(Approver::parse("@wheel"), Ok(Approver::UnixGroup("wheel")));
        assert_eq!(
            Approver::parse("@oidc:llm-approvers"),
            Ok(Approver::OidcGroup("llm-approvers"))
        );
        assert_eq!(
            Approver::parse("oidc:sub:00u1"),
            Ok(Approver::OidcSubject("00u1"))
        );
        for bad in [
            "saml:x",
            "@ldap:x",
            "@oidc:",
            "oidc:sub:",
            "@",
            "",
            "oidc:group:x",
        ] {
            assert!(Approver::parse(bad).is_err(), "{bad}");
        }
    }
}
