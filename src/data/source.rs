//! Reading documents from a source: text files, JSON Lines, Parquet, or the generated grammar.
//!
//! A document is the unit of the train/held-out split: a block of about `BLOCK_BYTES` of whole
//! lines of a text file, one JSONL record, one Parquet row, one generated grammar document.
//! Every problem is an `InputError` naming the file (and the line where there is one), raised
//! before a run directory exists.

use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{Array, LargeStringArray, StringArray, StringViewArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::config::SourceConfig;
use crate::data::grammar::Grammar;
use crate::error::InputError;

/// Text files are cut into documents of whole lines, each at least this long (or a file's end).
pub const BLOCK_BYTES: usize = 1024;

fn file_error(file: &Path, message: impl Into<String>) -> InputError {
    InputError::File {
        file: file.display().to_string(),
        message: message.into(),
    }
}

/// The documents of a file-backed source or a grammar, in a fixed order. `utf8` asks that every
/// document be valid UTF-8 (the char, word and BPE tokenizers read text, not bytes).
pub fn read_documents(
    source: &SourceConfig,
    utf8: bool,
    seed: u64,
) -> Result<Vec<Vec<u8>>, InputError> {
    let docs = match source {
        SourceConfig::Rulegraph(_) => unreachable!("the rule graph has no documents"),
        SourceConfig::Grammar(g) => Grammar::new(g, seed).documents(),
        SourceConfig::Text { path } => {
            let mut docs = Vec::new();
            for file in list_files(path)? {
                let bytes =
                    fs::read(&file).map_err(|e| file_error(&file, format!("cannot read: {e}")))?;
                if bytes.is_empty() {
                    if path_is_pattern_or_dir(path) {
                        continue;
                    }
                    return Err(file_error(&file, "the file is empty"));
                }
                if utf8 {
                    check_utf8(&file, &bytes)?;
                }
                docs.extend(blocks(&bytes));
            }
            if docs.is_empty() {
                return Err(file_error(Path::new(path), "no text: every file is empty"));
            }
            docs
        }
        SourceConfig::Jsonl { path, field } => {
            let mut docs = Vec::new();
            for file in list_files(path)? {
                let bytes =
                    fs::read(&file).map_err(|e| file_error(&file, format!("cannot read: {e}")))?;
                for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                    let at =
                        |message: String| file_error(&file, format!("line {}: {message}", i + 1));
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let value: serde_json::Value =
                        serde_json::from_slice(line).map_err(|e| at(format!("not JSON: {e}")))?;
                    let text = value
                        .get(field)
                        .ok_or_else(|| at(format!("no field {field:?}")))?
                        .as_str()
                        .ok_or_else(|| at(format!("field {field:?} is not a string")))?;
                    if !text.is_empty() {
                        docs.push(text.as_bytes().to_vec());
                    }
                }
            }
            if docs.is_empty() {
                return Err(file_error(
                    Path::new(path),
                    format!("no non-empty {field:?} strings"),
                ));
            }
            docs
        }
        SourceConfig::Parquet { path, column } => {
            let mut docs = Vec::new();
            for file in list_files(path)? {
                read_parquet_column(&file, column, &mut docs)?;
            }
            if docs.is_empty() {
                return Err(file_error(
                    Path::new(path),
                    format!("no non-empty {column:?} strings"),
                ));
            }
            docs
        }
    };
    Ok(docs)
}

fn path_is_pattern_or_dir(path: &str) -> bool {
    path.contains(['*', '?', '[']) || Path::new(path).is_dir()
}

/// The files a source path names: itself, every file under a directory, or a glob's matches;
/// sorted, so the document order does not depend on the file system.
pub fn list_files(path: &str) -> Result<Vec<PathBuf>, InputError> {
    let as_path = Path::new(path);
    let mut files = Vec::new();
    if path.contains(['*', '?', '[']) {
        let matches =
            glob::glob(path).map_err(|e| file_error(as_path, format!("not a valid glob: {e}")))?;
        for entry in matches {
            let entry =
                entry.map_err(|e| file_error(e.path(), format!("cannot read: {}", e.error())))?;
            if entry.is_file() {
                files.push(entry);
            }
        }
        if files.is_empty() {
            return Err(file_error(as_path, "the glob matches no file"));
        }
    } else if as_path.is_dir() {
        walk(as_path, &mut files)?;
        if files.is_empty() {
            return Err(file_error(as_path, "the directory holds no file"));
        }
    } else if as_path.is_file() {
        files.push(as_path.to_path_buf());
    } else {
        return Err(file_error(as_path, "no such file or directory"));
    }
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let entries = fs::read_dir(dir).map_err(|e| file_error(dir, format!("cannot list: {e}")))?;
    for entry in entries {
        let path = entry
            .map_err(|e| file_error(dir, format!("cannot list: {e}")))?
            .path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else if path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// Fails on the first invalid UTF-8 sequence, naming its line.
fn check_utf8(file: &Path, bytes: &[u8]) -> Result<(), InputError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        let at = e.valid_up_to();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        return Err(file_error(
            file,
            format!(
                "line {line}: invalid UTF-8 (byte {at}); the char, word and bpe tokenizers read \
                 UTF-8 text: fix the file or use tokenizer kind: byte"
            ),
        ));
    }
    Ok(())
}

/// Whole lines, gathered into blocks of at least `BLOCK_BYTES`.
fn blocks(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        current.extend_from_slice(line);
        if current.len() >= BLOCK_BYTES {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn read_parquet_column(
    file: &Path,
    column: &str,
    docs: &mut Vec<Vec<u8>>,
) -> Result<(), InputError> {
    let handle = fs::File::open(file).map_err(|e| file_error(file, format!("cannot read: {e}")))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle)
        .map_err(|e| file_error(file, format!("not a Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let Some((index, field)) = schema.column_with_name(column) else {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(file_error(
            file,
            format!("no column {column:?}; the columns are {names:?}"),
        ));
    };
    if !matches!(
        field.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Err(file_error(
            file,
            format!(
                "column {column:?} is {}, not a string column",
                field.data_type()
            ),
        ));
    }
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| file_error(file, format!("cannot read: {e}")))?;
    for batch in reader {
        let batch = batch.map_err(|e| file_error(file, format!("cannot read: {e}")))?;
        let array = batch.column(0);
        let mut push = |value: Option<&str>| {
            if let Some(text) = value.filter(|t| !t.is_empty()) {
                docs.push(text.as_bytes().to_vec());
            }
        };
        if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
            (0..a.len()).for_each(|i| push(a.is_valid(i).then(|| a.value(i))));
        } else if let Some(a) = array.as_any().downcast_ref::<LargeStringArray>() {
            (0..a.len()).for_each(|i| push(a.is_valid(i).then(|| a.value(i))));
        } else if let Some(a) = array.as_any().downcast_ref::<StringViewArray>() {
            (0..a.len()).for_each(|i| push(a.is_valid(i).then(|| a.value(i))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_every_byte_and_whole_lines() {
        let text: Vec<u8> = (0..500)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let blocks = blocks(&text);
        assert!(blocks.len() > 1);
        assert_eq!(blocks.concat(), text);
        for b in &blocks[..blocks.len() - 1] {
            assert!(b.len() >= BLOCK_BYTES && b.ends_with(b"\n"));
        }
    }
}
