//! The `densitrace` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use densitrace::config::Config;
use densitrace::error::InputError;
use densitrace::{device, progress, run};

#[derive(Parser)]
#[command(
    version,
    about = "Measure activation density while pretraining a small transformer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain with periodic density measurements; results land in OUT/<name>/<run_id>/.
    Run {
        config: PathBuf,
        /// Override a config value, e.g. --set train.steps=100 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Directory the run directory is created under.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
    /// Print the resolved config and exit without training.
    Check {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// List every wgpu adapter with its backend and type.
    Devices,
}

fn main() -> ExitCode {
    progress::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            overrides,
            out,
        } => Config::load(&config, &overrides)
            .map_err(anyhow::Error::from)
            .and_then(|c| {
                let outcome = run::run(&c, &out, std::env::args().collect())?;
                let metric = if c.probes.metrics.iter().any(|m| m == "hoyer") {
                    "hoyer"
                } else {
                    c.probes.metrics[0].as_str()
                };
                println!("\nfinal.norm {metric} (position last), first vs last evaluation:");
                print!("{}", run::summary_table(&outcome, metric));
                println!("results: {}", outcome.dir.display());
                Ok(())
            }),
        Command::Check { config, overrides } => Config::load(&config, &overrides)
            .map(|c| print!("{}", c.to_yaml()))
            .map_err(anyhow::Error::from),
        Command::Devices => {
            let adapters = device::list_adapters();
            if adapters.is_empty() {
                println!("{}", device::NO_ADAPTER_HINT);
            }
            for a in adapters {
                println!(
                    "{:<40} backend {:<8} type {:<14} driver {} {}",
                    a.name, a.backend, a.device_type, a.driver, a.driver_info
                );
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|c| c.downcast_ref::<InputError>().is_some()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
