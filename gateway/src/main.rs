use clap::Parser as _;
use gateway::{app, cli, config::Config, telemetry};

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Check { config } => report(app::check(&config)),
        cli::Command::Detach { config } => report(
            Config::load(config.as_deref())
                .map_err(app::AppError::from)
                .and_then(|cfg| app::detach(&cfg)),
        ),
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

fn report(r: Result<String, app::AppError>) -> i32 {
    match r {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            e.exit_code()
        }
    }
}
