use clap::Parser as _;
use gateway::{app, cli, commands, config::Config, telemetry};

/// mimalloc: a request's path allocates and frees many small buffers (HTTP/2 frames, header
/// maps, TLS records) across tasks; glibc malloc was ~7% of a proxied request's CPU (perf).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Check { config } => report(app::check(&config)),
        cli::Command::Detach { config } => report(
            Config::load(config.as_deref())
                .map_err(app::AppError::from)
                .and_then(|cfg| app::detach(&cfg)),
        ),
        cli::Command::Ca { command, config } => report(with_config(config, |cfg| match command {
            cli::CaCommand::Init => commands::ca_init(cfg),
            cli::CaCommand::Cert => commands::ca_cert(cfg),
            cli::CaCommand::Install {
                certifi,
                venvs,
                root,
            } => commands::ca_install(cfg, certifi, &venvs, &root),
            cli::CaCommand::Uninstall { venvs, root } => commands::ca_uninstall(cfg, &venvs, &root),
        })),
        cli::Command::Keys { command, config } => {
            report(with_config(config, |cfg| match command {
                cli::KeysCommand::Set {
                    name,
                    from_env,
                    stdin: _,
                } => commands::keys_set(
                    cfg,
                    &name,
                    match from_env {
                        Some(v) => commands::KeySource::Env(v),
                        None => commands::KeySource::Stdin,
                    },
                ),
                cli::KeysCommand::List => commands::keys_list(cfg),
                cli::KeysCommand::Rm { name } => commands::keys_rm(cfg, &name),
            }))
        }
        cli::Command::Approvals { command, config } => report(with_config(config, |cfg| {
            commands::approvals(cfg, &command)
        })),
        cli::Command::Journal {
            command,
            config,
            offline,
        } => report(with_config(config, |cfg| {
            commands::journal(cfg, &command, offline)
        })),
        cli::Command::Status { config } => report(with_config(config, commands::status)),
        cli::Command::Login {
            device,
            issuer,
            client_id,
            config,
        } => report(with_config(config, |cfg| {
            commands::login(cfg, device, issuer, client_id)
        })),
        cli::Command::Logout { config } => report(with_config(config, commands::logout)),
        cli::Command::Whoami {
            issuer,
            client_id,
            config,
        } => report(with_config(config, |cfg| {
            commands::whoami(cfg, issuer, client_id)
        })),
        cli::Command::Doctor { config } => match Config::load(config.as_deref()) {
            Err(e) => {
                eprintln!("gateway: {e}");
                64
            }
            Ok(cfg) => {
                let (text, failed) = gateway::doctor::render(&gateway::doctor::run(&cfg));
                println!("{text}");
                i32::from(failed)
            }
        },
        cli::Command::Replay {
            id,
            speed,
            config,
            offline,
        } => report(with_config(config, |cfg| {
            commands::replay(cfg, id, speed, offline)
        })),
        cli::Command::Run { config } => match Config::load(config.as_deref()) {
            Err(e) => {
                eprintln!("gateway: {e}");
                64
            }
            Ok(cfg) => {
                telemetry::init(&cfg.log);
                let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
                match rt.block_on(app::run(cfg)) {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::error!(error = %e, "gateway stopped");
                        eprintln!("gateway: {e}");
                        e.exit_code()
                    }
                }
            }
        },
    };
    std::process::exit(code);
}

fn with_config(
    config: Option<std::path::PathBuf>,
    f: impl FnOnce(&Config) -> Result<String, app::AppError>,
) -> Result<String, app::AppError> {
    let cfg = Config::load(config.as_deref())?;
    f(&cfg)
}

fn report(r: Result<String, app::AppError>) -> i32 {
    match r {
        Ok(msg) => {
            if !msg.is_empty() {
                println!("{msg}");
            }
            0
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            e.exit_code()
        }
    }
}
