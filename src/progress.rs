//! Log lines and a progress bar on stderr that do not fight: every log line is written with the
//! bar suspended. The bar only draws on a terminal; elsewhere (CI, pipes) the logs say enough.

use std::io::{self, IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn with_bar(f: impl FnOnce(Option<&ProgressBar>)) {
    let slot = BAR.get_or_init(|| Mutex::new(None));
    let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.as_ref());
}

/// Writes to stderr with the progress bar (if any) out of the way.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut result = Ok(buf.len());
        with_bar(|bar| match bar {
            Some(bar) => bar.suspend(|| result = io::stderr().write_all(buf).map(|_| buf.len())),
            None => result = io::stderr().write_all(buf).map(|_| buf.len()),
        });
        result
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// Logs densitrace at `info` and its dependencies at `warn` (or what `RUST_LOG` says) to stderr,
/// around the progress bar. CubeCL's autotuner logs every kernel it tunes at `info`.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,densitrace=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The training progress bar: step, loss, tokens/s.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(steps: usize) -> Self {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]")
                .expect("a valid template"),
        );
        *BAR.get_or_init(|| Mutex::new(None))
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
        Progress { bar }
    }

    pub fn set_step(&self, step: usize) {
        self.bar.set_position(step as u64);
    }

    pub fn train_step(&self, step: usize, loss: f64, tokens_per_s: f64) {
        self.bar.set_position(step as u64);
        self.bar
            .set_message(format!("loss {loss:.3} | {tokens_per_s:.0} tok/s"));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Some(slot) = BAR.get() {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}
