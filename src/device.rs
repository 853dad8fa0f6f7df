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

/// Where Vulkan loaders look for installable client drivers (ICDs) when neither
/// `VK_DRIVER_FILES` nor `VK_ICD_FILENAMES` is set (the loader's Linux defaults).
const ICD_DIRS: [&str; 3] = [
    "/usr/share/vulkan/icd.d",
    "/etc/vulkan/icd.d",
    "/usr/local/share/vulkan/icd.d",
];

/// Where NVIDIA's driver packages put their Vulkan ICD. Containers that mount the driver's
/// libraries often lack this file, which is the usual reason a node with a GPU lists no adapter.
const NVIDIA_ICDS: [&str; 2] = [
    "/usr/share/vulkan/icd.d/nvidia_icd.json",
    "/etc/vulkan/icd.d/nvidia_icd.json",
];

/// Whether the Vulkan loader can be loaded the way wgpu loads it: `dlopen("libvulkan.so.1")`,
/// which searches LD_LIBRARY_PATH, the linker cache and the system library directories.
fn vulkan_loader_loads() -> bool {
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is closed right away and no
    // symbol from it is used. Loading runs the library's initialisers, as wgpu's own load would.
    unsafe {
        let handle = libc::dlopen(
            c"libvulkan.so.1".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

/// The ICD manifests the loader will read: those the environment names, else every `.json` in
/// the default directories.
fn icd_manifests() -> (Option<&'static str>, Vec<String>) {
    for var in ["VK_DRIVER_FILES", "VK_ICD_FILENAMES"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let files = std::env::split_paths(&value)
                .map(|p| p.display().to_string())
                .collect();
            return (Some(var), files);
        }
    }
    let mut files: Vec<String> = ICD_DIRS
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    (None, files)
}

/// Why wgpu found no adapter here, as far as this machine shows it: no Vulkan loader, no driver
/// manifest (ICD), and on a node with NVIDIA's kernel driver where its manifest usually is.
/// What `densitrace devices` prints under an empty list, and what a missing adapter's error adds.
pub fn explain_no_adapter() -> String {
    let mut lines = Vec::new();
    if !vulkan_loader_loads() {
        lines.push(
            "- No Vulkan loader: libvulkan.so.1 does not load (searched in LD_LIBRARY_PATH, the \
             linker cache and the system library directories). Install it with `apt-get install \
             libvulkan1`; without root or network, fetch it elsewhere with `apt-get download \
             libvulkan1`, then here `dpkg -x libvulkan1_*.deb vulkan && export \
             LD_LIBRARY_PATH=$PWD/vulkan/usr/lib/x86_64-linux-gnu` (scripts/gpu-check does this \
             from a folder of .deb files)."
                .to_string(),
        );
    } else {
        match icd_manifests() {
            (Some(var), files) => lines.push(format!(
                "- The Vulkan loader loads; {var} names the driver manifests {}. Each must exist \
                 and name a driver library that loads; `VK_LOADER_DEBUG=driver densitrace \
                 devices` shows why one is rejected.",
                files.join(", ")
            )),
            (None, files) if files.is_empty() => lines.push(format!(
                "- The Vulkan loader loads but finds no driver (ICD): no .json manifest in {}. \
                 Install the GPU vendor's Vulkan driver (for Mesa's software one: `apt-get \
                 install mesa-vulkan-drivers`), or point the loader at the vendor's manifest: \
                 `export VK_DRIVER_FILES=/path/to/vendor_icd.json` (NVIDIA's is usually {}).",
                ICD_DIRS.join(", "),
                NVIDIA_ICDS.join(" or ")
            )),
            (None, files) => lines.push(format!(
                "- The Vulkan loader loads and finds the driver manifests {}, but none gave an \
                 adapter: the library each names must load (`VK_LOADER_DEBUG=driver densitrace \
                 devices` shows why one is rejected).",
                files.join(", ")
            )),
        }
    }
    if std::path::Path::new("/proc/driver/nvidia/version").exists() {
        let found: Vec<&str> = NVIDIA_ICDS
            .iter()
            .copied()
            .filter(|p| std::path::Path::new(p).is_file())
            .collect();
        lines.push(if found.is_empty() {
            format!(
                "- NVIDIA's kernel driver is loaded, but its Vulkan manifest is in neither {}. \
                 Containers often mount the driver's libraries without it: write one, e.g. \
                 nvidia_icd.json holding {{\"file_format_version\": \"1.0.0\", \"ICD\": \
                 {{\"library_path\": \"libGLX_nvidia.so.0\", \"api_version\": \"1.3\"}}}}, and \
                 `export VK_DRIVER_FILES=$PWD/nvidia_icd.json`.",
                NVIDIA_ICDS.join(" or ")
            )
        } else {
            format!(
                "- NVIDIA's kernel driver is loaded and its Vulkan manifest is at {}: the \
                 library it names (libGLX_nvidia.so.0) must load, from the same driver version \
                 as the kernel module.",
                found.join(", ")
            )
        });
    }
    lines.join("\n")
}

/// `NO_ADAPTER_HINT` and what this machine shows about why: the message of every command that
/// needs an adapter and finds none.
pub fn no_adapter_help() -> String {
    format!("{NO_ADAPTER_HINT}\n{}", explain_no_adapter())
}

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

/// Whether wgpu finds an adapter on the graphics API CubeCL uses (Vulkan, Metal or DX12); an
/// OpenGL adapter alone, which `list_adapters` also shows, cannot run the kernels.
pub fn has_usable_adapter() -> bool {
    !adapters(wgpu::Backends::PRIMARY).is_empty()
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

/// The environment variable that picks Burn's CPU backend in a binary built with more than one
/// (the `cpu-ndarray` and `cpu-libtorch` features). Only for BENCHMARKS.md's backend table:
/// the default build has `flex` alone, and the variable then accepts only `flex`.
pub const CPU_BACKEND_VAR: &str = "DENSITRACE_CPU_BACKEND";

/// Burn's CPU backends this binary was built with, the default first.
pub fn cpu_backends() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut names = vec!["flex"];
    #[cfg(feature = "cpu-ndarray")]
    names.push("ndarray");
    #[cfg(feature = "cpu-libtorch")]
    names.push("libtorch");
    names
}

/// The name of the CPU backend `device: cpu` uses: `flex` unless `DENSITRACE_CPU_BACKEND` names
/// another one this binary was built with.
pub fn cpu_backend_name() -> Result<&'static str, InputError> {
    let chosen = match std::env::var_os(CPU_BACKEND_VAR) {
        None => String::new(),
        Some(value) => value.into_string().map_err(|value| {
            InputError::Other(format!("{CPU_BACKEND_VAR}={value:?}: not a backend name"))
        })?,
    };
    Ok(match chosen.as_str() {
        "" => "flex",
        other => cpu_backends()
            .into_iter()
            .find(|name| *name == other)
            .ok_or_else(|| {
                InputError::Other(format!(
                    "{CPU_BACKEND_VAR}={other}: this binary has the CPU backends {} (the others \
                     need a build with `--features cpu-ndarray` or `cpu-libtorch`)",
                    cpu_backends().join(", ")
                ))
            })?,
    })
}

/// The CPU backend `device: cpu` uses (`cpu_backend_name`): its name and device.
pub fn cpu_backend() -> Result<(&'static str, Device), InputError> {
    let name = cpu_backend_name()?;
    let device = match name {
        #[cfg(feature = "cpu-ndarray")]
        #[allow(deprecated)]
        // Burn 0.22 deprecates ndarray in favour of flex; measured all the same.
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "cpu-libtorch")]
        #[allow(deprecated)]
        // deprecated in Burn 0.22 too (for CubeCL backends); measured all the same.
        "libtorch" => Device::libtorch(),
        _ => Device::flex(),
    };
    Ok((name, device))
}

/// Opens the device the config asks for. A missing adapter for `wgpu` is bad input (exit 2).
pub fn select(choice: DeviceChoice) -> Result<RunDevice, InputError> {
    let cpu = |reason: String| -> Result<RunDevice, InputError> {
        let (name, device) = cpu_backend()?;
        let reason = match name {
            "flex" => reason,
            other => format!("{reason} (Burn CPU backend {other}, from {CPU_BACKEND_VAR})"),
        };
        Ok(RunDevice {
            device,
            backend: "cpu",
            adapter: None,
            reason,
        })
    };
    match choice {
        DeviceChoice::Cpu => cpu("device: cpu in the config".into()),
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
                "device: wgpu: {}",
                no_adapter_help()
            ))),
        },
        DeviceChoice::Auto => match best_adapter() {
            Some((adapter, device)) if is_hardware(adapter.kind) => Ok(RunDevice {
                device,
                backend: "wgpu",
                reason: format!("device: auto found a hardware GPU ({})", adapter.name),
                adapter: Some(adapter),
            }),
            Some((adapter, _)) => cpu(format!(
                "device: auto found no hardware GPU (only {}, a {:?} adapter); training on the \
                 CPU backend with the CPU reference metrics",
                adapter.name, adapter.kind
            )),
            None => cpu(
                "device: auto found no wgpu adapter; training on the CPU backend with the CPU \
                 reference metrics"
                    .into(),
            ),
        },
    }
}
