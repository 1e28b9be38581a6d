//! One-shot CLI commands around the daemon: `ca init | cert | install | uninstall`, `keys set | list | rm`.
//! Each returns the text to print; nothing here ever prints a key.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use crate::{
    app::{AppError, ensure_state_dir},
    config::Config,
    tls::ca::{CA_CERT, Ca},
    vault::{Secret, Vault},
};

pub fn ca_init(cfg: &Config) -> Result<String, AppError> {
    ensure_state_dir(cfg)?;
    if let Some(a) = fleet_anchor(cfg)? {
        return Ok(format!(
            "a fleet root is configured (ca.root = {}): nothing to create here; clients trust \
             {}, recorded at {}",
            cfg.ca.root.name(),
            a.what,
            a.path.display()
        ));
    }
    let (ca, created) = Ca::load_or_create(&cfg.state_dir)?;
    let path = ca.dir.join(CA_CERT);
    Ok(if created {
        format!("created the gateway CA: {}", path.display())
    } else {
        format!("the gateway CA already exists: {}", path.display())
    })
}

pub fn ca_cert(cfg: &Config) -> Result<String, AppError> {
    Ok(anchor(cfg)?.pem.trim_end().to_string())
}

/// `gateway ca show [--json]`: which certificate clients trust and what signs the leaves.
pub fn ca_show(cfg: &Config, json: bool) -> Result<String, AppError> {
    let a = anchor(cfg)?;
    Ok(crate::tls::fleet_ca::show::show(cfg, &a, json))
}

fn fleet_anchor(cfg: &Config) -> Result<Option<crate::tls::fleet_ca::show::Anchor>, AppError> {
    crate::tls::fleet_ca::show::fleet_anchor(cfg)
        .map_err(|e| AppError::Tls(crate::tls::TlsError::from(e)))
}

/// The certificate clients must trust: the organisation root with a fleet root (`[ca] root`),
/// else this node's own CA (created when missing).
fn anchor(cfg: &Config) -> Result<crate::tls::fleet_ca::show::Anchor, AppError> {
    ensure_state_dir(cfg)?;
    if let Some(a) = fleet_anchor(cfg)? {
        return Ok(a);
    }
    let (ca, _) = Ca::load_or_create(&cfg.state_dir)?;
    Ok(crate::tls::fleet_ca::show::Anchor {
        pem: ca.cert_pem.clone(),
        path: ca.dir.join(CA_CERT),
        what: "this node's own CA".into(),
        note: None,
    })
}

/// The anchor and what install/uninstall are asked to do.
fn trust_args<'a>(
    cfg: &Config,
    venvs: &'a [PathBuf],
    root: &'a Path,
    certifi: bool,
) -> Result<(crate::tls::fleet_ca::show::Anchor, crate::trust::Opts<'a>), AppError> {
    let a = anchor(cfg)?;
    let cwd = std::env::current_dir()?;
    Ok((
        a,
        crate::trust::Opts {
            root,
            certifi,
            venvs,
            cwd,
        },
    ))
}

fn trust_error(e: crate::trust::TrustError) -> AppError {
    match e {
        e @ crate::trust::TrustError::NotAVenv(_) => AppError::Usage(e.to_string()),
        e => e.into(),
    }
}

/// `gateway ca install [--certifi [--venv DIR]...] [--root DIR]` ([`crate::trust::install`]):
/// the organisation root when a fleet root is configured, else the node's own CA.
pub fn ca_install(
    cfg: &Config,
    certifi: bool,
    venvs: &[PathBuf],
    root: &Path,
) -> Result<String, AppError> {
    let (a, opts) = trust_args(cfg, venvs, root, certifi)?;
    let ca = crate::trust::CaFile {
        pem: &a.pem,
        path: &a.path,
    };
    let mut out = Vec::new();
    if cfg.ca.root != crate::tls::fleet_ca::RootKind::Local {
        out.push(format!("installing {}", a.what));
    }
    out.extend(a.note.iter().map(|n| format!("note: {n}")));
    out.extend(crate::trust::install(&ca, &opts).map_err(trust_error)?);
    Ok(out.join("\n"))
}

/// `gateway ca uninstall [--venv DIR]... [--root DIR]` ([`crate::trust::uninstall`]).
pub fn ca_uninstall(cfg: &Config, venvs: &[PathBuf], root: &Path) -> Result<String, AppError> {
    let (a, opts) = trust_args(cfg, venvs, root, true)?;
    let ca = crate::trust::CaFile {
        pem: &a.pem,
        path: &a.path,
    };
    Ok(crate::trust::uninstall(&ca, &opts)
        .map_err(trust_error)?
        .join("\n"))
}

/// Where `keys set` reads the value from.
pub enum KeySource {
    Env(String),
    Stdin,
}

pub fn keys_set(cfg: &Config, name: &str, src: KeySource) -> Result<String, AppError> {
    let value = match src {
        KeySource::Env(var) => std::env::var(&var)
            .map_err(|_| AppError::Usage(format!("environment variable {var} is not set")))?,
        KeySource::Stdin => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    let secret = Secret::new(value);
    // A Vertex AI provider's entry is a service-account JSON key (checked by `Vault::set`);
    // anything else under its name would fail every request.
    let catalog = crate::provider::Catalog::from_config(cfg);
    if let Some(p) = catalog
        .iter()
        .find(|p| p.api == crate::provider::Api::Vertex && p.key.as_deref() == Some(name))
        && !secret.expose().trim_start().starts_with('{')
    {
        return Err(AppError::Usage(format!(
            "key `{name}` is provider `{}`'s (Vertex AI): store the service-account JSON key \
             file's content, e.g. `gateway keys set {name} --stdin < key.json`",
            p.name
        )));
    }
    ensure_state_dir(cfg)?;
    let vault = Vault::new(&cfg.vault, &cfg.state_dir)?;
    vault.set(name, &secret)?;
    Ok(format!("stored key `{name}` in {}", vault.file().display()))
}

pub fn keys_list(cfg: &Config) -> Result<String, AppError> {
    let vault = Vault::new(&cfg.vault, &cfg.state_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(vault.list())?.join("\n"))
}

pub fn keys_rm(cfg: &Config, name: &str) -> Result<String, AppError> {
    let vault = Vault::new(&cfg.vault, &cfg.state_dir)?;
    if vault.remove(name)? {
        Ok(format!("removed key `{name}`"))
    } else {
        Err(AppError::Usage(format!(
            "no key `{name}` in {}",
            vault.file().display()
        )))
    }
}

/// `gateway approvals ...`: one call to the daemon's admin socket.
pub fn approvals(cfg: &Config, cmd: &crate::cli::ApprovalsCommand) -> Result<String, AppError> {
    use crate::cli::ApprovalsCommand as A;
    let socket = crate::admin::socket_path(&cfg.state_dir);
    if let A::Approve { id, .. } | A::Deny { id, .. } = cmd {
        // Checked here so that nothing but NODE:N or N reaches the socket's URL.
        crate::fleet::FleetId::parse(id, "local").map_err(|e| AppError::Usage(e.to_string()))?;
    }
    let (method, target, body) = match cmd {
        A::List { .. } => ("GET", "/v1/approvals".to_string(), None),
        A::Approve { id, reason } => (
            "POST",
            format!("/v1/approvals/{id}/approve"),
            Some(serde_json::json!({ "reason": reason })),
        ),
        A::Deny { id, reason } => (
            "POST",
            format!("/v1/approvals/{id}/deny"),
            Some(serde_json::json!({ "reason": reason })),
        ),
    };
    let bearer = signed_in(cfg)?;
    let (status, v) =
        crate::admin::call_as(&socket, method, &target, body.as_ref(), bearer.as_deref())?;
    if status != 200 {
        let msg = crate::hold::printable(v["error"].as_str().unwrap_or("refused"), true);
        return Err(crate::admin::AdminError::Refused(msg).into());
    }
    // The daemon sends holds printable already; made printable here again, so a terminal
    // never gets a raw escape from a held request whatever answered on the socket.
    let mut holds = v["holds"].clone();
    printable_strings(&mut holds);
    Ok(match cmd {
        A::List { json: true } => holds.to_string(),
        A::List { json: false } => {
            let holds = holds.as_array().cloned().unwrap_or_default();
            if holds.is_empty() {
                return Ok("no requests are waiting for approval".into());
            }
            let text = |h: &serde_json::Value, k: &str| {
                crate::hold::printable(h[k].as_str().unwrap_or("-"), true)
            };
            let mut out =
                String::from("ID  NODE  WAITING  USER(UID)  PID  COMM  PROVIDER  ENDPOINT  WHY\n");
            for h in holds {
                let id = match &h["id"] {
                    serde_json::Value::String(s) => crate::hold::printable(s, true),
                    other => other.to_string(),
                };
                out.push_str(&format!(
                    "{}  {}  {}  {}({})  {}  {}  {}  {}  {}\n    {}\n",
                    id,
                    text(&h, "node"),
                    h["waiting"].as_u64().unwrap_or(1),
                    text(&h, "user"),
                    h["uid"],
                    h["pid"],
                    text(&h, "comm"),
                    text(&h, "provider"),
                    text(&h, "endpoint"),
                    text(&h, "reason"),
                    text(&h, "excerpt"),
                ));
            }
            out.trim_end().to_string()
        }
        A::Approve { id, .. } => format!("hold {id} approved"),
        A::Deny { id, .. } => format!("hold {id} denied"),
    })
}

/// The signed-in user's ID token (refreshed when due), when `[oidc]` is configured and
/// somebody signed in: the admin API then acts for that identity.
fn signed_in(cfg: &Config) -> Result<Option<String>, AppError> {
    match &cfg.oidc {
        None => Ok(None),
        Some(o) => Ok(crate::oidc::login::current_token(o, None)?),
    }
}

/// `gateway login`.
pub fn login(
    cfg: &Config,
    device: bool,
    issuer: Option<String>,
    client_id: Option<String>,
) -> Result<String, AppError> {
    use crate::oidc::login;
    let o = login::effective(cfg.oidc.as_ref(), issuer.as_deref(), client_id.as_deref())?;
    Ok(login::login(
        &o,
        &login::LoginOptions {
            device,
            ..Default::default()
        },
    )?)
}

/// `gateway logout`.
pub fn logout(cfg: &Config) -> Result<String, AppError> {
    Ok(crate::oidc::login::logout(cfg.oidc.as_ref(), None)?)
}

/// `gateway whoami`.
pub fn whoami(
    cfg: &Config,
    issuer: Option<String>,
    client_id: Option<String>,
) -> Result<String, AppError> {
    use crate::oidc::login;
    let o = login::effective(cfg.oidc.as_ref(), issuer.as_deref(), client_id.as_deref())?;
    Ok(login::whoami(&o, None)?)
}

/// Every string in `v` made printable ([`crate::hold::printable`], newlines kept).
fn printable_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = crate::hold::printable(s, false),
        serde_json::Value::Array(a) => a.iter_mut().for_each(printable_strings),
        serde_json::Value::Object(o) => o.values_mut().for_each(printable_strings),
        _ => {}
    }
}

/// The journal's files, for the CLI's `--offline` (the daemon must be stopped: sled's lock).
/// `keyed`: with the key (verify, accept); listings need none.
fn offline_store(cfg: &Config, keyed: bool) -> Result<crate::journal::Store, AppError> {
    use crate::journal::{JournalError, Store, seal::Seal};
    let path = cfg.journal.path(&cfg.state_dir);
    if !path.exists() {
        return Err(AppError::Usage(format!(
            "there is no journal at {} (journal.path / state_dir)",
            path.display()
        )));
    }
    let seal = if keyed {
        let (key, head) = (
            cfg.journal.key_file(&cfg.state_dir),
            cfg.journal.head_file(&cfg.state_dir),
        );
        Some(
            Seal::load(&key, &head)
                .map_err(|e| JournalError::from(crate::journal::StoreError::from(e)))?,
        )
    } else {
        None
    };
    let keyed = seal.is_some();
    let store = Store::open(&path, seal).map_err(JournalError::from)?;
    let wal = cfg.journal.wal_dir(&cfg.state_dir);
    if keyed {
        // As the daemon's start would: what a killed daemon left in the write-ahead log.
        crate::journal::wal::replay(&store, &wal).map_err(JournalError::from)?;
    } else {
        let n = crate::journal::wal::pending(&wal);
        if n > 0 {
            eprintln!(
                "note: {n} records in the write-ahead log {} are not in this listing yet (the \
                 daemon's next start, or `journal verify --offline`, puts them in)",
                wal.display()
            );
        }
    }
    Ok(store)
}

fn not_running(e: crate::admin::AdminError) -> AppError {
    match e {
        e @ crate::admin::AdminError::NotRunning { .. } => AppError::Usage(format!(
            "{e}; or read a stopped daemon's journal with --offline"
        )),
        e => e.into(),
    }
}

fn target(rest: &[String], query: &str) -> String {
    let mut target = String::from("/v1/journal");
    for r in rest {
        target.push('/');
        target.push_str(r);
    }
    if !query.is_empty() {
        target.push('?');
        target.push_str(query);
    }
    target
}

/// Ask the journal one question (verify, one record): through the daemon, or (`offline`)
/// from its files.
fn journal_query(
    cfg: &Config,
    offline: bool,
    rest: &[String],
    query: &str,
) -> Result<serde_json::Value, AppError> {
    if offline {
        let store = offline_store(cfg, rest.first().is_some_and(|r| r == "verify"))?;
        return crate::journal::query::answer(&store, rest, query)
            .map_err(|(_, m)| AppError::Usage(m));
    }
    let socket = crate::admin::socket_path(&cfg.state_dir);
    let bearer = signed_in(cfg)?;
    let (status, v) = crate::admin::call_as(
        &socket,
        "GET",
        &target(rest, query),
        None,
        bearer.as_deref(),
    )
    .map_err(not_running)?;
    if status != 200 {
        let msg = v["error"].as_str().unwrap_or("refused").to_string();
        return Err(crate::admin::AdminError::Refused(msg).into());
    }
    Ok(v)
}

/// A listing, record by record into `line` (never the whole journal in memory): through the
/// daemon, or (`offline`) from its files. Returns how many records.
fn journal_lines(
    cfg: &Config,
    offline: bool,
    listing: crate::journal::query::Listing,
    query: &str,
    line: &mut dyn FnMut(serde_json::Value) -> std::io::Result<()>,
) -> Result<u64, AppError> {
    use crate::journal::query::{Listing, stream};
    if offline {
        let store = offline_store(cfg, false)?;
        return stream(&store, listing, query, line).map_err(|(_, m)| AppError::Usage(m));
    }
    let rest = match listing {
        Listing::Summaries => vec![],
        Listing::Export => vec!["export".to_string()],
    };
    let socket = crate::admin::socket_path(&cfg.state_dir);
    let bearer = signed_in(cfg)?;
    crate::admin::call_lines(&socket, &target(&rest, query), bearer.as_deref(), line)
        .map_err(not_running)
}

/// One line of `journal list`.
fn list_line(r: &serde_json::Value) -> String {
    let mut decisions: Vec<String> = r["decisions"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| {
                    format!(
                        "{}:{}:{}×{}",
                        d["direction"].as_str().unwrap_or("?"),
                        d["rule"].as_str().unwrap_or("?"),
                        d["action"].as_str().unwrap_or("?"),
                        d["count"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(a) = r["approval"].as_object() {
        decisions.push(format!("hold:{}", a["outcome"].as_str().unwrap_or("?")));
    }
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
    format!(
        "{}  {}  {}({})  {}  {}  {}  {}  {}  {}  {}  {:.1}  {}",
        r["id"],
        s("time"),
        r["who"]["user"].as_str().unwrap_or("-"),
        r["who"]["uid"],
        r["who"]["pid"],
        r["who"]["comm"].as_str().unwrap_or("-"),
        s("provider"),
        s("endpoint"),
        s("model"),
        r["status"],
        s("outcome"),
        r["duration_ms"].as_f64().unwrap_or(0.0),
        if decisions.is_empty() {
            "-".to_string()
        } else {
            decisions.join(",")
        }
    )
}

pub fn journal(
    cfg: &Config,
    cmd: &crate::cli::JournalCommand,
    offline: bool,
) -> Result<String, AppError> {
    use std::io::Write as _;

    use crate::{
        cli::JournalCommand as J,
        journal::query::{Listing, encode},
    };
    match cmd {
        J::List {
            json,
            since,
            provider,
            user,
            limit,
        } => {
            let limit = limit.map(|n| n.to_string());
            let q = encode(&[
                ("since", since.as_deref()),
                ("provider", provider.as_deref()),
                ("user", user.as_deref()),
                ("limit", limit.as_deref()),
            ]);
            // Written as the records come, flushed at the end (and whenever the buffer fills).
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut first = true;
            let n = journal_lines(cfg, offline, Listing::Summaries, &q, &mut |r| {
                if *json {
                    out.write_all(if first { b"[" } else { b"," })?;
                    serde_json::to_writer(&mut out, &r)?;
                } else {
                    if first {
                        writeln!(
                            out,
                            "ID  TIME  USER(UID)  PID  COMM  PROVIDER  ENDPOINT  MODEL  STATUS  OUTCOME  MS  DECISIONS"
                        )?;
                    }
                    writeln!(out, "{}", list_line(&r))?;
                }
                first = false;
                Ok(())
            })?;
            if *json {
                out.write_all(if n == 0 { b"[]\n" } else { b"]\n" })?;
            } else if n == 0 {
                writeln!(out, "no journal records")?;
            }
            out.flush()?;
            Ok(String::new())
        }
        J::Show { id, json } => {
            let v = journal_query(cfg, offline, &[id.to_string()], "")?;
            if *json {
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            let mut out = String::new();
            let mut head = crate::journal::query::summary(v.clone());
            if let Some(m) = head.as_object_mut() {
                m.remove("prev");
            }
            out.push_str(&serde_json::to_string_pretty(&head).unwrap_or_default());
            if let Some(ws) = v.get("websocket").filter(|w| w.is_object()) {
                out.push_str(&crate::websocket::render::show(ws));
                return Ok(out);
            }
            for (k, title) in [
                ("request_body", "request (as sent)"),
                ("response_body", "response (as delivered)"),
            ] {
                out.push_str(&format!("\n--- {title} ---\n"));
                out.push_str(
                    v[k].as_str()
                        .unwrap_or("(not kept: journal.bodies = \"none\")"),
                );
            }
            Ok(out)
        }
        J::Export { since } => {
            let q = encode(&[("since", since.as_deref())]);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            journal_lines(cfg, offline, Listing::Export, &q, &mut |r| {
                serde_json::to_writer(&mut out, &r)?;
                out.write_all(b"\n")
            })?;
            out.flush()?;
            Ok(String::new())
        }
        J::Verify { fleet: true } => fleet_verify(cfg),
        J::Verify { fleet: false } => {
            let v = journal_query(cfg, offline, &["verify".to_string()], "")?;
            let records = v["records"].as_u64().unwrap_or(0);
            let pruned = v["checkpoint"]["pruned"].as_u64().unwrap_or(0);
            let breaks = v["breaks"].as_array().cloned().unwrap_or_default();
            if breaks.is_empty() {
                let mut notes = Vec::new();
                if pruned > 0 {
                    notes.push(format!(
                        "from the retention checkpoint ({pruned} older records pruned)"
                    ));
                }
                if let Some(k) = v["keyed_from"].as_u64() {
                    notes.push(format!(
                        "keyed from record {k} (records before it predate the key: checked by \
                         the unkeyed chain)"
                    ));
                }
                if let Some(a) = v["anchored"].as_u64() {
                    notes.push(format!("head at record {a}"));
                }
                return Ok(format!(
                    "journal verified: {records} records, chain intact{}",
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", notes.join("; "))
                    }
                ));
            }
            let lines: Vec<String> = breaks
                .iter()
                .map(|b| {
                    format!(
                        "journal chain BROKEN at record {}: {} ({records} records)",
                        b["id"],
                        b["reason"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            Err(AppError::Usage(lines.join("\ngateway: ")))
        }
        J::Accept => {
            if !offline {
                return Err(AppError::Usage(
                    "`journal accept` rewrites the head file: stop the daemon and give --offline"
                        .into(),
                ));
            }
            let store = offline_store(cfg, true)?;
            let before = store.verify().map_err(crate::journal::JournalError::from)?;
            if let Some(b) = before
                .breaks
                .iter()
                .find(|b| b.kind == crate::journal::store::BreakKind::Anchor)
            {
                return Err(AppError::Usage(format!(
                    "not accepted: {} (at record {}); only the journal's end can be re-anchored",
                    b.reason, b.id
                )));
            }
            let id = store
                .reanchor()
                .map_err(crate::journal::JournalError::from)?;
            let was = before
                .breaks
                .iter()
                .find(|b| b.kind == crate::journal::store::BreakKind::Head)
                .map(|b| format!(" (it was: {})", b.reason))
                .unwrap_or_default();
            Ok(format!("journal head anchored at record {id}{was}"))
        }
    }
}

/// Write a recorded answer to standard output piece by piece, at its recorded pace.
pub fn replay(cfg: &Config, id: u64, speed: f64, offline: bool) -> Result<String, AppError> {
    use std::io::Write as _;
    if !(speed >= 0.0 && speed.is_finite()) {
        return Err(AppError::Usage(format!(
            "--speed {speed}: give 0 (no pauses) or more"
        )));
    }
    let v = journal_query(cfg, offline, &[id.to_string()], "")?;
    if let Some(ws) = v.get("websocket").filter(|w| w.is_object()) {
        return replay_session(id, ws, speed);
    }
    let Some(body) = v["response_body"].as_str() else {
        return Err(AppError::Usage(format!(
            "record {id} has no answer body (journal.bodies = \"none\" when it was written)"
        )));
    };
    let events = v["events"].as_array().cloned().unwrap_or_default();
    let body = body.as_bytes();
    let start = std::time::Instant::now();
    let mut out = std::io::stdout().lock();
    let mut pos = 0;
    for e in &events {
        let at = e["at_ms"].as_f64().unwrap_or(0.0);
        let len = e["len"].as_u64().unwrap_or(0) as usize;
        if speed > 0.0 {
            let due = std::time::Duration::from_secs_f64(at / 1e3 / speed);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let end = (pos + len).min(body.len());
        out.write_all(&body[pos..end])?;
        out.flush()?;
        pos = end;
    }
    // Anything left (a record written before the timeline was complete).
    out.write_all(&body[pos..])?;
    out.flush()?;
    eprintln!(
        "(record {id}: {} pieces over {:.1} ms as recorded)",
        events.len(),
        events
            .last()
            .and_then(|e| e["at_ms"].as_f64())
            .unwrap_or(0.0)
    );
    Ok(String::new())
}

/// A WebSocket session's provider→client messages, one line each, at their recorded pace.
fn replay_session(id: u64, ws: &serde_json::Value, speed: f64) -> Result<String, AppError> {
    use std::io::Write as _;
    let start = std::time::Instant::now();
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    let mut last = 0.0;
    for m in ws["messages"].as_array().into_iter().flatten() {
        if m["dir"] != "server" || !matches!(m["kind"].as_str(), Some("text" | "binary")) {
            continue;
        }
        let at = m["at_ms"].as_f64().unwrap_or(0.0);
        if speed > 0.0 {
            let due = std::time::Duration::from_secs_f64(at / 1e3 / speed);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        match m["text"].as_str() {
            Some(t) => writeln!(out, "{t}")?,
            None => writeln!(out, "[{} bytes not kept]", m["len"])?,
        }
        out.flush()?;
        n += 1;
        last = at;
    }
    eprintln!("(record {id}: {n} provider messages over {last:.1} ms as recorded)");
    Ok(String::new())
}

/// The daemon's health through its admin socket.
pub fn status(cfg: &Config) -> Result<String, AppError> {
    let socket = crate::admin::socket_path(&cfg.state_dir);
    match crate::admin::call(&socket, "GET", "/v1/health", None)? {
        (200, _) => Ok(format!(
            "gateway running (admin socket {})",
            socket.display()
        )),
        (s, v) => Err(crate::admin::AdminError::Refused(format!(
            "the daemon answered {s}: {}",
            v["error"].as_str().unwrap_or("unhealthy")
        ))
        .into()),
    }
}

/// `gateway journal verify --fleet`: every node's chain from the bus ([`crate::fleet::verify`]).
fn fleet_verify(cfg: &Config) -> Result<String, AppError> {
    let Some(fleet) = &cfg.fleet else {
        return Err(AppError::Usage(
            "`journal verify --fleet` reads the fleet bus: this config has no [fleet] section"
                .into(),
        ));
    };
    let node = cfg.node_name();
    // This node's own public key (pinned for its own records) and, when readable, its journal
    // key (its records' keyed hashes are checked too).
    let own_key = std::fs::metadata(cfg.state_dir.join(crate::fleet::sign::KEY_FILE))
        .ok()
        .and_then(|_| crate::fleet::sign::NodeKey::load_or_create(&cfg.state_dir).ok())
        .map(|k| k.public());
    let seal = crate::journal::seal::Seal::load(
        &cfg.journal.key_file(&cfg.state_dir),
        &cfg.journal.head_file(&cfg.state_dir),
    )
    .ok();
    let own = own_key.map(|k| (node, k, seal));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let v = rt
        .block_on(crate::fleet::verify::run(fleet, own))
        .map_err(|e| AppError::Usage(e.to_string()))?;
    let text = crate::fleet::verify::render(&v);
    if v.ok() {
        Ok(format!(
            "fleet journal verified: {} records of {} nodes on the bus\n{text}",
            v.messages,
            v.nodes.len()
        ))
    } else {
        Err(AppError::Usage(format!(
            "fleet journal chain BROKEN\n{text}"
        )))
    }
}
