//! Bad input: a config, an override, a file or a directory the user gave us that we cannot use.
//!
//! The binary exits with code 2 on any of these (and 1 on everything else), and they are all
//! raised before a run directory is created.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file we could not read or parse.
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// One or more fields with bad values, each with its path.
    #[error("{}", fields_message(file, issues))]
    Fields {
        file: String,
        issues: Vec<(String, String)>,
    },
    /// A `--set` override that cannot be applied.
    #[error("--set {spec}: {message}")]
    Override { spec: String, message: String },
    /// Anything else the user must fix (a device that is not there, an unwritable directory).
    #[error("{0}")]
    Other(String),
}

fn fields_message(file: &str, issues: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (path, message)) in issues.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let path = if path.is_empty() || path == "." {
            "(top level)"
        } else {
            path
        };
        fmt::write(&mut out, format_args!("{file}: {path}: {message}")).unwrap();
    }
    out
}

/// Every exit code the binary uses, in one place (README, "Exit codes"). Commands decide which
/// one they end with through this type; only `main` turns it into a process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done.
    Success = 0,
    /// Something failed that is not the user's input: I/O, a corrupted file, a failed check, a
    /// sweep cell that did not finish.
    Failure = 1,
    /// Bad input (a config, a flag, a file or a directory we cannot use): nothing was created.
    BadInput = 2,
    /// The loss went non-finite: the run stopped there and says at which step.
    Diverged = 3,
    /// Stopped by SIGINT or SIGTERM after a checkpoint: `--resume` continues.
    Interrupted = 130,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit a child densitrace process ended with, if its code is one of ours.
    pub fn from_code(code: i32) -> Option<Exit> {
        [
            Exit::Success,
            Exit::Failure,
            Exit::BadInput,
            Exit::Diverged,
            Exit::Interrupted,
        ]
        .into_iter()
        .find(|e| i32::from(e.code()) == code)
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}
