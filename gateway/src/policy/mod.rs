//! Policy: what may leave for a provider and what may come back (DESIGN §1, §6): every
//! credential the client sent is removed ([`credentials`]); every body is scanned by one
//! [`scan::Scanner`] whose rules say what a hit does ([`scan::Action::effect`]).
//!
//! [`Policy`] holds the current scanner. The vault keys the gateway injects are detectors too:
//! the first exchange that injects a key the scanner does not know has it rebuilt with that key
//! (once per key), so an upstream that echoes the key — or a long piece of it — back in an
//! answer, a header or an error page hands the client `[MASKED:vault-key]`.

pub mod b64;
pub mod credentials;
pub mod detect;
pub mod prefilter;
pub mod scan;

use std::sync::{Arc, Mutex, RwLock};

use scan::{PolicyConfig, RuleConfig, ScanError, Scanner};

use crate::vault::Secret;

/// How many distinct vault keys are kept as detectors (the most recently injected ones).
const MAX_KEYS: usize = 256;

pub struct Policy {
    rules: Vec<RuleConfig>,
    cfg: PolicyConfig,
    current: RwLock<Arc<Scanner>>,
    /// The keys the current scanner detects; rebuilds take this lock, one at a time.
    keys: Mutex<Vec<Secret>>,
}

impl Policy {
    pub fn new(rules: &[RuleConfig], cfg: &PolicyConfig) -> Result<Self, ScanError> {
        Ok(Self {
            rules: rules.to_vec(),
            cfg: cfg.clone(),
            current: RwLock::new(Arc::new(Scanner::new(rules, cfg)?)),
            keys: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// The scanner in force.
    pub fn scanner(&self) -> Arc<Scanner> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The scanner for an exchange that injects `key`: one that masks it.
    pub fn with_key(&self, key: &Secret) -> Result<Arc<Scanner>, ScanError> {
        let cur = self.scanner();
        if cur.knows_key(key.expose()) {
            return Ok(cur);
        }
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.scanner();
        if cur.knows_key(key.expose()) {
            return Ok(cur);
        }
        keys.push(Secret::new(key.expose()));
        if keys.len() > MAX_KEYS {
            keys.remove(0);
        }
        let started = std::time::Instant::now();
        let next = Arc::new(Scanner::with_keys(&self.rules, &self.cfg, &keys)?);
        tracing::info!(
            keys = keys.len(),
            ms = started.elapsed().as_millis() as u64,
            "policy: a vault key joined the detectors"
        );
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        Ok(next)
    }
}
