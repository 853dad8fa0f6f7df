//! Which device a run uses: a wgpu adapter (density kernels in WGSL) or Burn's CPU backend (the
//! f64 reference metrics).
//!
//! `auto` takes a hardware GPU (discrete, else integrated) if wgpu finds one, else the CPU backend:
//! Burn's training kernels crawl on a software Vulkan driver, so a machine without a GPU trains on
//! the CPU. `wgpu` takes the best adapter of any type, software (llvmpipe) included, which is how
//! the tests run the real kernels on machines without a GPU.

use burn::tensor::{Device, DeviceKind};
use burn_cubecl::cubecl::config::autotune::AutotuneLevel;
use burn_cubecl::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use serde::{Deserialize, Serialize};

use crate::config::DeviceChoice;
use crate::error::InputError;

/// What to install when no adapter is found, for the error message.
pub const NO_ADAPTER_HINT: &str = "no wgpu adapter found. Install a Vulkan driver; on a \
     Debian/Ubuntu machine without a GPU, Mesa's software driver works: \
     `apt-get install mesa-vulkan-drivers libvulkan1`";

/// One wgpu adapter, as `densitrace devices` lists it and the manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// Not recorded (device_type says it in words); read back as Other.
    #[serde(skip, default = "unrecorded_kind")]
    kind: wgpu::DeviceType,
}

fn unrecorded_kind() -> wgpu::DeviceType {
    wgpu::DeviceType::Other
}

/// The device a run uses, and how its metrics are computed.
#[derive(Debug, Clone)]
pub struct RunDevice {
    pub device: Device,
    /// `wgpu` or `cpu`.
    pub backend: &'static str,
    pub adapter: Option<AdapterSummary>,
    /// Why this device: what `auto` found, or that the config asked for it.
    pub reason: String,
}

impl RunDevice {
    /// True when density is computed by the WGSL kernels on the device.
    pub fn measures_on_device(&self) -> bool {
        self.backend == "wgpu"
    }
}

fn summarize(adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    AdapterSummary {
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver,
        driver_info: info.driver_info,
        kind: info.device_type,
    }
}

fn adapters(backends: wgpu::Backends) -> Vec<AdapterSummary> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.enumerate_adapters(backends))
        .iter()
        .map(summarize)
        .collect()
}

/// Every adapter wgpu finds on every backend, for `densitrace devices`.
pub fn list_adapters() -> Vec<AdapterSummary> {
    adapters(wgpu::Backends::all())
}

fn rank(kind: wgpu::DeviceType) -> u8 {
    match kind {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn is_hardware(kind: wgpu::DeviceType) -> bool {
    matches!(
        kind,
        wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
    )
}

/// The best adapter on the graphics API CubeCL uses (the primary one: Vulkan, Metal or DX12),
/// with the Burn device that opens that same adapter.
fn best_adapter() -> Option<(AdapterSummary, Device)> {
    let found = adapters(wgpu::Backends::PRIMARY);
    let best = found.iter().min_by_key(|a| rank(a.kind))?.clone();
    // CubeCL picks "the n-th adapter of this type", so count the same type before it.
    let index = found
        .iter()
        .filter(|a| a.kind == best.kind && a.backend == best.backend)
        .position(|a| *a == best)
        .unwrap_or(0);
    let kind = match best.kind {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(index),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(index),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(index),
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
        wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
    };
    Some((best, Device::wgpu(kind)))
}

/// On a software adapter, CubeCL's autotuner spends most of the first steps benchmarking kernel
/// variants. Measured on llvmpipe with the quickstart model (6 steps, 2 cores): the first step
/// takes 35 s at the default ("balanced") level and 14 s at "minimal", and the whole run 95 s
/// against 55 s, with later steps equally fast (~0.2 s). So a software adapter tunes at
/// "minimal" unless `CUBECL_AUTOTUNE_LEVEL` says otherwise; the rest of CubeCL's configuration
/// (its config files and environment variables) still applies. Returns whether it did.
fn minimal_autotune_for_software_adapter() -> bool {
    if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_some() {
        return false;
    }
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    config.autotune.level = AutotuneLevel::Minimal;
    CubeClRuntimeConfig::try_set(config)
}

/// Opens the device the config asks for. A missing adapter for `wgpu` is bad input (exit 2).
pub fn select(choice: DeviceChoice) -> Result<RunDevice, InputError> {
    let cpu = |reason: String| RunDevice {
        device: Device::flex(),
        backend: "cpu",
        adapter: None,
        reason,
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu("device: cpu in the config".into())),
        DeviceChoice::Wgpu => match best_adapter() {
            Some((adapter, device)) => {
                let mut reason = "device: wgpu in the config".to_string();
                if !is_hardware(adapter.kind) && minimal_autotune_for_software_adapter() {
                    reason.push_str(" (software adapter: CubeCL autotune level minimal)");
                }
                Ok(RunDevice {
                    device,
                    backend: "wgpu",
                    reason,
                    adapter: Some(adapter),
                })
            }
            None => Err(InputError::Other(format!(
                "device: wgpu: {NO_ADAPTER_HINT}"
            ))),
        },
        DeviceChoice::Auto => match best_adapter() {
            Some((adapter, device)) if is_hardware(adapter.kind) => Ok(RunDevice {
                device,
                backend: "wgpu",
                reason: format!("device: auto found a hardware GPU ({})", adapter.name),
                adapter: Some(adapter),
            }),
            Some((adapter, _)) => Ok(cpu(format!(
                "device: auto found no hardware GPU (only {}, a {:?} adapter); training on the \
                 CPU backend with the CPU reference metrics",
                adapter.name, adapter.kind
            ))),
            None => Ok(cpu(
                "device: auto found no wgpu adapter; training on the CPU backend with the CPU \
                 reference metrics"
                    .into(),
            )),
        },
    }
}
