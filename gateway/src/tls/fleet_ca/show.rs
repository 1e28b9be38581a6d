//! For the CLI (`gateway ca cert | install | uninstall | show`): which certificate clients must
//! trust — the organisation root when a fleet root is configured, else the node's own CA —
//! and what this node currently signs with.

use std::path::PathBuf;

use super::{ANCHOR_FILE, FleetCaError, RootKind, RootSource, STATUS_FILE, sign};
use crate::{config::Config, tls::ca::ca_dir};

/// The certificate clients trust.
pub struct Anchor {
    pub pem: String,
    /// Where it is on this host (what `SSL_CERT_FILE` and friends can name).
    pub path: PathBuf,
    /// Which one it is, in words.
    pub what: String,
    /// Said when the root could not be asked and the copy the daemon recorded was used.
    pub note: Option<String>,
}

/// The fleet root's anchor (asked from where the root is, recorded in
/// `<state_dir>/ca/org-root.pem`), or `None` with `root = "local"`.
pub fn fleet_anchor(cfg: &Config) -> Result<Option<Anchor>, FleetCaError> {
    let Some(src) = RootSource::from_config(cfg)? else {
        return Ok(None);
    };
    let what = format!("the organisation root ({})", src.describe());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| FleetCaError::Io {
            path: PathBuf::from("<runtime>"),
            source,
        })?;
    let recorded = ca_dir(&cfg.state_dir).join(ANCHOR_FILE);
    match rt.block_on(src.anchor()) {
        Ok(pem) => {
            // Recorded for runtimes that need a file; a read-only state dir (a shell without
            // rights on it) still gets the certificate, with a note.
            let (path, note) = match super::write_public(&cfg.state_dir, ANCHOR_FILE, &pem) {
                Ok(p) => (p, None),
                Err(e) => (recorded, Some(format!("not recorded: {e}"))),
            };
            Ok(Some(Anchor {
                pem,
                path,
                what,
                note,
            }))
        }
        Err(e) => match std::fs::read_to_string(&recorded) {
            Ok(pem) if sign::pem_certs(&pem, "recorded root").is_ok() => Ok(Some(Anchor {
                pem,
                path: recorded,
                what,
                note: Some(format!(
                    "could not ask the fleet root ({e}); using the copy the daemon recorded"
                )),
            })),
            _ => Err(e),
        },
    }
}

/// `gateway ca show [--json]`.
pub fn show(cfg: &Config, anchor: &Anchor, json: bool) -> String {
    let facts = sign::pem_certs(&anchor.pem, "anchor")
        .ok()
        .and_then(|c| sign::facts(&c[0]).ok().map(|f| (f, c[0].clone())));
    let fingerprint = facts
        .as_ref()
        .map(|(_, d)| {
            use sha2::Digest as _;
            sha2::Sha256::digest(d.as_ref())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default();
    let intermediate: Option<serde_json::Value> = (cfg.ca.root != RootKind::Local)
        .then(|| std::fs::read(ca_dir(&cfg.state_dir).join(STATUS_FILE)).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (subject, not_after) = facts
        .as_ref()
        .map(|(f, _)| (f.subject.clone(), super::renew::fmt(Some(f.not_after))))
        .unwrap_or_default();
    if json {
        return serde_json::json!({
            "root": cfg.ca.root.name(),
            "trust": {
                "what": anchor.what,
                "path": anchor.path,
                "subject": subject,
                "sha256": fingerprint,
                "not_after": not_after,
            },
            "intermediate": intermediate,
            "note": anchor.note,
        })
        .to_string();
    }
    let mut out = vec![
        format!("ca.root = {}", cfg.ca.root.name()),
        format!("clients trust: {}", anchor.what),
        format!("  file:    {}", anchor.path.display()),
        format!("  subject: {subject}"),
        format!("  sha256:  {fingerprint}"),
        format!("  expires: {not_after}"),
    ];
    match (cfg.ca.root, &intermediate) {
        (RootKind::Local, _) => {
            out.push("leaves are signed by this node's own CA (no fleet root configured)".into())
        }
        (_, Some(i)) => {
            out.push(
                "leaves are signed by this node's intermediate (the daemon's last record):".into(),
            );
            for k in ["subject", "serial", "not_before", "not_after", "renew_at"] {
                out.push(format!("  {k}: {}", i[k].as_str().unwrap_or("-")));
            }
        }
        (_, None) => out.push(
            "no node intermediate recorded yet: the daemon obtains one when it starts".into(),
        ),
    }
    if let Some(n) = &anchor.note {
        out.push(format!("note: {n}"));
    }
    out.join("\n")
}
