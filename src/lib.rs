//! densitrace: pretrain a small GPT and measure, every N steps and on the device, how dense its
//! activations are on in-distribution versus distribution-shifted probes.
//!
//! Data flows one way: `config` -> `data` -> `model` -> `measure` (probes) -> `kernels` ->
//! `rundir` (the run directory: its layout and its tables) -> `report`; `train` drives the loop,
//! `run` ties one run together and `sweep` runs many; `selftest` checks a machine's device
//! against the reference.

pub mod bench;
pub mod config;
pub mod data;
pub mod device;
pub mod dump;
pub mod error;
pub mod kernels;
pub mod measure;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod progress;
pub mod report;
pub mod run;
pub mod rundir;
pub mod seed;
pub mod selftest;
pub mod summary;
pub mod sweep;
pub mod train;
