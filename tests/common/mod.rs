//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;

/// A config on the data and model every CLI test trains on (`densitrace::tiny_data_and_model!`,
/// the one selftest's end-to-end run uses: a 20-entity rule graph, a 1-layer 16-wide GPT) on the
/// CPU backend, seconds a run, with the test's own name, seed, schedule and probes appended:
/// `const CONFIG: &str = tiny_config!("name: crash\nseed: 5\ntrain: ...")`.
#[macro_export]
macro_rules! tiny_config {
    ($rest:literal) => {
        concat!("device: cpu\n", densitrace::tiny_data_and_model!(), $rest)
    };
}

use burn::tensor::Device;
use densitrace::config::DeviceChoice;
use densitrace::device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A wgpu device (software Vulkan on machines without a GPU). Under `CI` a missing adapter fails
/// the test with what to install; elsewhere the test says loudly that it skipped.
pub fn wgpu_device() -> Option<Device> {
    wgpu_run_device().map(|d| d.device)
}

/// As `wgpu_device`, with the adapter it opened (what `densitrace::selftest` checks run on).
pub fn wgpu_run_device() -> Option<device::RunDevice> {
    match device::select(DeviceChoice::Wgpu) {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set and the kernel tests need a wgpu adapter: {e}");
            }
            eprintln!("SKIPPED: no wgpu adapter ({e})");
            None
        }
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A one-row-group Parquet file of `columns`.
pub fn write_parquet(path: &std::path::Path, columns: Vec<(&str, arrow::array::ArrayRef)>) {
    let batch = arrow::array::RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}
