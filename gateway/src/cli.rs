//! The command line (DESIGN §8). Every subcommand takes `-c FILE`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Transparent egress gateway for LLM APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach, listen, serve (embedded defaults without -c).
    Run {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file; exit 64 with the key and the reason when it is invalid.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Remove the pinned programs: stops enforcement, providers are reached directly again.
    Detach {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// The internal CA clients must trust.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
    },
    /// Keys in the vault (file backend).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
    },
    /// Requests held for approval (through the running daemon's admin socket).
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
    },
    /// The journal: one record per exchange (through the running daemon's admin socket).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        /// Read the journal files directly (only while the daemon is stopped).
        #[arg(long, global = true)]
        offline: bool,
    },
    /// Sign in with the organisation's identity provider ([oidc] in the config): authorization
    /// code + PKCE in a browser, or the device flow (--device, or when no browser can open).
    /// The tokens are kept in $XDG_CONFIG_HOME/gateway/tokens.json (0600) and sent with
    /// `gateway approvals` and `gateway journal`.
    Login {
        /// Use the device authorization grant: print a URL and a code to enter elsewhere.
        #[arg(long)]
        device: bool,
        /// The issuer URL (overrides oidc.issuer).
        #[arg(long)]
        issuer: Option<String>,
        /// The client id (overrides oidc.client_id).
        #[arg(long)]
        client_id: Option<String>,
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Forget the kept tokens (the refresh token is revoked where the issuer offers it).
    Logout {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Who the kept tokens name: subject, name, groups, expiry (never the token).
    Whoami {
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long)]
        client_id: Option<String>,
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Is the daemon running and answering? Exit 0 when it is (liveness/readiness probes).
    Status {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Check this host: kernel and BTF, cgroup v2, bpffs, capabilities, pins, CA trust,
    /// provider DNS, vault, daemon — one line each.
    Doctor {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Print a recorded answer as it reached the client, with its timing.
    Replay {
        id: u64,
        /// 2 = twice as fast; 0 = no pauses.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Read the journal files directly (only while the daemon is stopped).
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// One line per exchange, oldest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only records newer than this (30s, 10m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// A user name or uid.
        #[arg(long)]
        user: Option<String>,
        /// Only the newest N (at most 10000; without it every record is streamed).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One record, whole: identity, decisions, bodies as delivered, timings.
    Show {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Every record as JSON Lines on standard output (streamed, oldest first).
    Export {
        #[arg(long)]
        since: Option<String>,
    },
    /// Walk the keyed chain; name what does not fit: a record, the retention checkpoint, or an
    /// end that is not the one the head file anchors (records removed, an older copy).
    Verify,
    /// Anchor the journal's end as it is now, after restoring a backup on purpose (the daemon
    /// refuses to start on a journal shorter than its head). `--offline` only.
    Accept,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending holds, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Let a held request go to the provider (the reason, if given, is journaled).
    Approve {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse a held request; the client gets a provider-shaped 403 with the reason.
    Deny {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA in the state dir (nothing happens when it exists).
    Init,
    /// Print the CA certificate (PEM).
    Cert,
    /// Make every runtime trust the CA: the system store, NODE_EXTRA_CA_CERTS /
    /// REQUESTS_CA_BUNDLE / SSL_CERT_FILE in /etc/environment and /etc/profile.d/gateway-ca.sh
    /// (an admin's own value is kept), and with --certifi the certifi bundles of the Pythons
    /// jobs run. Prints what it did and what is left to do.
    Install {
        /// Also append the CA to the certifi bundles of python3/python on PATH, of each
        /// --venv, and of ./.venv and ./venv.
        #[arg(long)]
        certifi: bool,
        /// A project virtualenv whose certifi gets the CA (with --certifi; repeatable).
        #[arg(long = "venv", value_name = "DIR", requires = "certifi")]
        venvs: Vec<PathBuf>,
        /// Install under this root instead of / (for images and tests).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Undo `ca install`: remove exactly the lines, blocks, anchor and script it wrote.
    Uninstall {
        /// A virtualenv whose certifi bundle `ca install --certifi --venv` changed (repeatable).
        #[arg(long = "venv", value_name = "DIR")]
        venvs: Vec<PathBuf>,
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Store a key, read from an environment variable or standard input (never an argument);
    /// for Vertex AI the service-account JSON key file, as downloaded.
    Set {
        name: String,
        #[arg(long, conflicts_with = "stdin", required_unless_present = "stdin")]
        from_env: Option<String>,
        #[arg(long)]
        stdin: bool,
    },
    /// List key names (never values).
    List,
    /// Remove a key.
    Rm { name: String },
}
