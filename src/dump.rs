//! `densitrace dump`: the raw activation vectors of one probe set at one site, from a run's saved
//! weights, as a float32 .npy file of shape [vectors, width], so anyone can recompute the metrics
//! offline in numpy or PyTorch.
//!
//! The probe sets are the run's stored ones (`probes.json`, checked against the manifest's hash),
//! the weights come from `checkpoints/final/model.bpk`, and the forward pass runs on the CPU
//! backend.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;

use crate::error::InputError;
use crate::measure::forward::{forward, named_sites, vectors_at};
use crate::metrics::{Position, SiteKind};
use crate::rundir::{FinishedRun, write_atomic};

pub struct DumpRequest<'a> {
    pub run_dir: &'a Path,
    pub probe: &'a str,
    pub site: &'a str,
    pub position: Position,
    pub level: Option<f64>,
    pub out: &'a Path,
}

/// Writes the vectors; returns their shape.
pub fn dump(request: &DumpRequest) -> Result<[usize; 2]> {
    let run = FinishedRun::open(request.run_dir)?;
    let (config, sets) = (&run.config, &run.probe_sets);
    let matching: Vec<_> = sets.iter().filter(|s| s.name == request.probe).collect();
    if matching.is_empty() {
        let names: Vec<&str> = config.probes.sets.iter().map(|s| s.name.as_str()).collect();
        return Err(InputError::Other(format!(
            "--probe {}: no such probe set; the run has {names:?}",
            request.probe
        ))
        .into());
    }
    let levels: Vec<f64> = matching.iter().map(|s| s.level).collect();
    let probe = match request.level {
        Some(level) => matching.iter().find(|s| s.level == level).ok_or_else(|| {
            InputError::Other(format!(
                "--level {level}: probe set {} has levels {levels:?}",
                request.probe
            ))
        })?,
        None if matching.len() == 1 => &matching[0],
        None => {
            return Err(InputError::Other(format!(
                "probe set {} has levels {levels:?}: choose one with --level",
                request.probe
            ))
            .into());
        }
    };

    let device = Device::flex();
    let model = run.model(&device)?;
    let all_sites = [
        SiteKind::ResidPost,
        SiteKind::MlpPost,
        SiteKind::AttnOut,
        SiteKind::FinalNorm,
    ];
    let (_, _, sites) = forward(&model, probe, config.probes.batch_size, &device);
    let named = named_sites(sites, &all_sites, config.model.layers);
    let known: Vec<String> = named.iter().map(|site| site.name.clone()).collect();
    let acts = named
        .into_iter()
        .find(|site| site.name == request.site)
        .map(|site| site.acts)
        .ok_or_else(|| {
            InputError::Other(format!(
                "--site {}: no such site; known: {}",
                request.site,
                known.join(", ")
            ))
        })?;
    let vectors = vectors_at(&acts, request.position, probe.last_index());
    let [n, d] = vectors.dims();
    let values: Vec<f32> = vectors
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 activations");
    write_atomic(request.out, &npy_f32(&values, [n, d]))?;
    Ok([n, d])
}

/// A version 1.0 .npy file of little-endian float32 in C order.
pub fn npy_f32(values: &[f32], shape: [usize; 2]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape[0], shape[1]
    );
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64,
    // ending in a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::npy_f32;

    #[test]
    fn npy_header_is_aligned_and_describes_the_array() {
        let bytes = npy_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + header_len + 24);
        assert_eq!(
            &bytes[10 + header_len..10 + header_len + 4],
            &1.0f32.to_le_bytes()
        );
    }
}
