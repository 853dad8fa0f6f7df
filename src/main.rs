//! The `densitrace` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use densitrace::config::Config;
use densitrace::error::InputError;
use densitrace::{device, dump, progress, run};

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
    /// Write the raw activation vectors of one probe set at one site, from a run's final weights,
    /// as a float32 .npy file of shape [vectors, width].
    Dump {
        run_dir: PathBuf,
        /// The probe set's name in the run's config.
        #[arg(long)]
        probe: String,
        /// The full site name, e.g. blocks.1.mlp.post or final.norm.
        #[arg(long)]
        site: String,
        /// last (the prompt's last token) or all (every prompt token).
        #[arg(long, default_value = "last")]
        position: String,
        /// The shift level, for probe sets with several.
        #[arg(long)]
        level: Option<f64>,
        /// The .npy file to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
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
                // The paper's metric if it was measured, else Hoyer, else the first one.
                let metric = ["topk_energy@0.05", "hoyer"]
                    .into_iter()
                    .find(|m| c.probes.metrics.iter().any(|x| x == m))
                    .unwrap_or(c.probes.metrics[0].as_str());
                println!(
                    "\n{metric} of final.norm at the last prompt token, first and last \
                     evaluation (accuracy: the answer's, at the last):"
                );
                print!("{}", run::summary_table(&outcome, metric));
                println!("results: {}", outcome.dir.display());
                Ok(())
            }),
        Command::Check { config, overrides } => Config::load(&config, &overrides)
            .map(|c| print!("{}", c.to_yaml()))
            .map_err(anyhow::Error::from),
        Command::Dump {
            run_dir,
            probe,
            site,
            position,
            level,
            output,
        } => position
            .parse()
            .map_err(|e: String| anyhow::Error::from(InputError::Other(format!("--position: {e}"))))
            .and_then(|position| {
                let shape = dump::dump(&dump::DumpRequest {
                    run_dir: &run_dir,
                    probe: &probe,
                    site: &site,
                    position,
                    level,
                    out: &output,
                })?;
                println!(
                    "wrote {} ({} x {} float32)",
                    output.display(),
                    shape[0],
                    shape[1]
                );
                Ok(())
            }),
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
