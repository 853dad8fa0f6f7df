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
