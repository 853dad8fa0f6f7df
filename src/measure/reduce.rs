//! Turning measured tensors into metrics: who reduces them (`Reduction`: the WGSL kernels on the
//! device, `kernels::fast` or the f64 reference on the host), and what an evaluation reads back
//! for that (`ReadbackPlan`). One list of entries, recorded as each tensor is registered in the
//! evaluation's one `Transaction`, is what decodes the read-back too, so the two cannot drift
//! apart: each value is filed under the kind of read it was registered as, never by its place.

use burn::prelude::*;
use burn::tensor::Transaction;

use super::forward::{Answers, Measured};
use crate::config::{ProbePlan, ReductionChoice};
use crate::device::RunDevice;
use crate::kernels::{self, across, fast, reference};
use crate::metrics::{Columns, MetricSpec, effective_rank};

/// Who turns activations into metrics. The one place that chooses (`for_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// The WGSL kernels, on the device; only summaries are read back.
    Kernels,
    /// `kernels::fast`, the f32 CPU reduction, on the host; the activations are read back.
    CpuFast,
    /// The f64 reference, on the host; the activations are read back.
    Reference,
}

impl Reduction {
    /// `probes.reduction` on `device`: `fast` is the kernels on a wgpu device and
    /// `kernels::fast` on the CPU backend; `reference` is the f64 reference on either.
    pub fn for_config(device: &RunDevice, choice: ReductionChoice) -> Reduction {
        match choice {
            ReductionChoice::Reference => Reduction::Reference,
            ReductionChoice::Fast if device.measures_on_device() => Reduction::Kernels,
            ReductionChoice::Fast => Reduction::CpuFast,
        }
    }

    /// What a config that does not set `probes.reduction` gets on `device`.
    pub fn for_device(device: &RunDevice) -> Reduction {
        Reduction::for_config(device, ReductionChoice::default())
    }

    /// The name the manifest records for each evaluation.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Kernels => "kernels",
            Reduction::CpuFast => "cpu_fast",
            Reduction::Reference => "reference",
        }
    }

    /// Whether the activations themselves are read back and reduced on the host.
    pub fn on_host(self) -> bool {
        self != Reduction::Kernels
    }
}

/// One metric of one measured tensor, reduced over its vectors.
pub(super) struct MetricResult {
    pub(super) metric: MetricSpec,
    pub(super) mean: f64,
    pub(super) std: f64,
    /// Finite vectors it was computed over.
    pub(super) n: i64,
    /// At the plan's quantiles; empty for across-vector metrics.
    pub(super) quantiles: Vec<f64>,
}

/// One measured tensor, reduced.
pub(super) struct Reduced {
    pub(super) metrics: Vec<MetricResult>,
    /// The per-vector table (`[vectors][columns]`), when it was read back: always on the host,
    /// from the kernels only for tensors that write samples.
    pub(super) per_row: Vec<Vec<f64>>,
}

/// What one read-back of an evaluation holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Read {
    /// A measured tensor's `[vectors, width]` activations, for a host reduction.
    Activations,
    /// The kernels' `[columns, quantiles]`: each column's quantiles over the vectors.
    Quantiles,
    /// The kernels' per-vector table `[vectors, columns]`, for a tensor that writes samples.
    Table,
    /// The kernels' `[columns, 3]` summary: per column the mean, std and finite count.
    Summary,
    /// `across::active_stats` at this eps, `[1, 3]`: the mean active fraction, its std and the
    /// dead fraction (`active_fraction@eps` and `dead_fraction@eps` share it).
    ActiveStats(f64),
    /// `across::covariance`, `[width, width]`, that rankme needs.
    Covariance,
    /// A probe set's `answer_stats`: the mean and std of each of its answer metrics.
    AnswerStats,
    /// A probe set's `[2 * samples]` losses (`next_token_loss`, then `prompt_loss`).
    SampleLosses,
}

/// Whose a read-back is.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// The measured tensor at this index.
    Tensor(usize),
    /// The probe set at this index.
    Set(usize),
}

/// One registered read-back: its place in the transaction's results is its place in
/// `Registered::entries`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    read: Read,
    owner: Owner,
    /// The f32 values it holds, from the registered tensor's shape.
    floats: usize,
}

/// What is read back per measured tensor, derived once from the plan and the reduction.
pub(super) struct ReadbackPlan {
    pub(super) reduction: Reduction,
    pub(super) cols: Columns,
    metrics: Vec<MetricSpec>,
    quantiles: Vec<f64>,
    /// `quantiles` as the kernels take them.
    kernel_quantiles: Vec<f32>,
    /// The plan's across-vector metrics, in its order.
    across_metrics: Vec<MetricSpec>,
    /// The kernels' across-vector read-backs, each once: `ActiveStats` for each distinct eps and
    /// `Covariance` for rankme, in the order the plan first asks for them.
    across_reads: Vec<Read>,
}

/// Which across-vector read-back a metric is computed from.
fn across_read(metric: &MetricSpec) -> Read {
    match *metric {
        MetricSpec::ActiveFraction(eps) | MetricSpec::DeadFraction(eps) => Read::ActiveStats(eps),
        _ => Read::Covariance,
    }
}

/// `aggregate`'s read-back is `[columns, 3]`: per column the mean, std and finite count.
fn summary_of(summary: &[f32], column: usize) -> (f64, f64, i64) {
    let s = &summary[column * 3..column * 3 + 3];
    (s[0] as f64, s[1] as f64, s[2] as i64)
}

/// An evaluation's read-backs, registered in one transaction and recorded entry by entry.
pub(super) struct Registered {
    transaction: Transaction,
    entries: Vec<Entry>,
    tensors: usize,
    sets: usize,
}

/// The read-backs of one measured tensor (or probe set), each under the kind it was registered
/// as.
#[derive(Default)]
pub(super) struct Reads(Vec<(Read, Vec<f32>)>);

impl Reads {
    /// The values registered as `read`, if they were.
    fn take(&mut self, read: Read) -> Option<Vec<f32>> {
        let at = self.0.iter().position(|(r, _)| *r == read)?;
        Some(self.0.swap_remove(at).1)
    }

    /// The values registered as `read`, which the plan registers.
    fn take_registered(&mut self, read: Read) -> Vec<f32> {
        self.take(read)
            .unwrap_or_else(|| panic!("the read-back plan registers {read:?}"))
    }
}

/// One probe set's decoded read-backs.
pub(super) struct SetReads {
    pub(super) stats: Vec<f32>,
    pub(super) losses: Option<Vec<f32>>,
}

/// An evaluation's read-back, decoded by its recorded entries.
pub(super) struct Readback {
    /// What crossed from the device, in bytes.
    pub(super) bytes: u64,
    /// Per measured tensor, in `measured`'s order.
    pub(super) tensors: Vec<Reads>,
    /// Per probe set, in the sets' order.
    pub(super) sets: Vec<SetReads>,
}

impl Registered {
    fn push<const D: usize>(&mut self, read: Read, owner: Owner, tensor: Tensor<D>) {
        let floats = tensor.shape().num_elements();
        let transaction = std::mem::take(&mut self.transaction);
        self.transaction = transaction.register(tensor);
        self.entries.push(Entry {
            read,
            owner,
            floats,
        });
    }

    /// Runs the transaction and files each result under its entry, checking its size.
    pub(super) fn execute(self) -> Readback {
        let data = self.transaction.execute();
        assert_eq!(
            data.len(),
            self.entries.len(),
            "one read-back per registered entry"
        );
        let bytes = data.iter().map(|d| d.as_bytes().len() as u64).sum();
        let mut tensors: Vec<Reads> = (0..self.tensors).map(|_| Reads::default()).collect();
        let mut sets: Vec<Reads> = (0..self.sets).map(|_| Reads::default()).collect();
        for (entry, data) in self.entries.iter().zip(data) {
            let values = data.try_to_vec::<f32>().expect("f32 read back");
            assert_eq!(
                values.len(),
                entry.floats,
                "the read-back of {entry:?} holds what was registered"
            );
            let reads = match entry.owner {
                Owner::Tensor(i) => &mut tensors[i],
                Owner::Set(p) => &mut sets[p],
            };
            reads.0.push((entry.read, values));
        }
        let sets = sets
            .into_iter()
            .map(|mut reads| SetReads {
                stats: reads.take_registered(Read::AnswerStats),
                losses: reads.take(Read::SampleLosses),
            })
            .collect();
        Readback {
            bytes,
            tensors,
            sets,
        }
    }
}

impl ReadbackPlan {
    pub(super) fn new(plan: &ProbePlan, reduction: Reduction) -> ReadbackPlan {
        let across_metrics: Vec<MetricSpec> = plan
            .metrics
            .iter()
            .filter(|m| !m.is_per_vector())
            .copied()
            .collect();
        let mut across_reads: Vec<Read> = Vec::new();
        for read in across_metrics.iter().map(across_read) {
            if !across_reads.contains(&read) {
                across_reads.push(read);
            }
        }
        ReadbackPlan {
            reduction,
            cols: Columns::for_metrics(&plan.metrics),
            metrics: plan.metrics.clone(),
            quantiles: plan.quantiles.clone(),
            kernel_quantiles: plan.quantiles.iter().map(|&q| q as f32).collect(),
            across_metrics,
            across_reads,
        }
    }

    /// Registers everything an evaluation reads back, in one transaction, recording each entry:
    /// per measured tensor its activations for a host reduction, or from the kernels its
    /// quantiles (if the plan has any), its per-vector table (if it writes samples), its summary
    /// and each across-vector read; then each probe set's answer statistics (and sample losses).
    pub(super) fn register(&self, measured: &[Measured], answers: &[Answers]) -> Registered {
        let mut registered = Registered {
            transaction: Transaction::default(),
            entries: Vec::new(),
            tensors: measured.len(),
            sets: answers.len(),
        };
        for (i, m) in measured.iter().enumerate() {
            let owner = Owner::Tensor(i);
            if self.reduction.on_host() {
                registered.push(Read::Activations, owner, m.vectors.clone());
                continue;
            }
            let table = kernels::row_metrics(m.vectors.clone(), &self.cols);
            if !self.kernel_quantiles.is_empty() {
                let quantiles = kernels::column_quantiles(table.clone(), &self.kernel_quantiles);
                registered.push(Read::Quantiles, owner, quantiles);
            }
            if m.per_sample {
                registered.push(Read::Table, owner, table.clone());
            }
            registered.push(Read::Summary, owner, kernels::aggregate(table.clone()));
            let valid = across::valid_rows(table);
            for &read in &self.across_reads {
                let tensor = match read {
                    Read::ActiveStats(eps) => {
                        across::active_stats(m.vectors.clone(), valid.clone(), eps).reshape([1, 3])
                    }
                    _ => across::covariance(m.vectors.clone(), valid.clone()),
                };
                registered.push(read, owner, tensor);
            }
        }
        for (p, answers) in answers.iter().enumerate() {
            registered.push(Read::AnswerStats, Owner::Set(p), answers.stats.clone());
            if let Some(losses) = &answers.losses {
                registered.push(Read::SampleLosses, Owner::Set(p), losses.clone());
            }
        }
        registered
    }

    /// Reduces `m` from what was read back of it. On the host, `rows` is its per-vector table
    /// when the caller already has it (computed for the same vectors elsewhere).
    pub(super) fn reduce(
        &self,
        mut reads: Reads,
        m: &Measured,
        rows: Option<Vec<Vec<f64>>>,
    ) -> Reduced {
        match self.reduction {
            Reduction::Kernels => self.decode_kernels(reads, m),
            host => {
                let data = reads.take_registered(Read::Activations);
                self.reduce_on_host(data, m, host, rows)
            }
        }
    }

    /// The kernels' metrics of `m` from their read-backs.
    fn decode_kernels(&self, mut reads: Reads, m: &Measured) -> Reduced {
        let width = m.vectors.dims()[1];
        let nq = self.quantiles.len();
        // The plan registers the quantiles whenever the config has any.
        let q: Vec<f64> = if nq > 0 {
            reads.take_registered(Read::Quantiles)
        } else {
            Vec::new()
        }
        .into_iter()
        .map(f64::from)
        .collect();
        let per_row = match reads.take(Read::Table) {
            Some(table) => table
                .chunks(self.cols.count())
                .map(|row| row.iter().map(|&v| f64::from(v)).collect())
                .collect(),
            None => Vec::new(),
        };
        let summary = reads.take_registered(Read::Summary);
        // Every per-vector column counts the same finite vectors; l1 is always computed.
        let (_, _, finite_vectors) = summary_of(&summary, Columns::L1);
        let mut metrics = Vec::new();
        for metric in self.metrics.iter().filter(|m| m.is_per_vector()) {
            let c = self.cols.column(metric);
            let (mean, std, n) = summary_of(&summary, c);
            metrics.push(MetricResult {
                metric: *metric,
                mean,
                std,
                n,
                quantiles: q[c * nq..(c + 1) * nq].to_vec(),
            });
        }
        let across: Vec<(Read, Vec<f32>)> = self
            .across_reads
            .iter()
            .map(|&read| (read, reads.take_registered(read)))
            .collect();
        for metric in &self.across_metrics {
            let (_, v) = across
                .iter()
                .find(|(read, _)| *read == across_read(metric))
                .expect("every across metric has its read");
            let (mean, std) = match *metric {
                // active_stats: [mean active fraction, its std, dead fraction].
                MetricSpec::ActiveFraction(_) => (v[0] as f64, v[1] as f64),
                MetricSpec::DeadFraction(_) => (v[2] as f64, f64::NAN),
                _ => {
                    let cov: Vec<f64> = v.iter().map(|&c| f64::from(c)).collect();
                    let rank = if finite_vectors > 1 {
                        effective_rank(&cov, width)
                    } else {
                        f64::NAN
                    };
                    (rank, f64::NAN)
                }
            };
            metrics.push(MetricResult {
                metric: *metric,
                mean,
                std,
                n: finite_vectors,
                quantiles: Vec::new(),
            });
        }
        Reduced { metrics, per_row }
    }

    /// Reduces `m`'s read-back activations on the host: with `kernels::fast` (`CpuFast`), which
    /// computes only the costly columns the plan's metrics read, or with the f64 reference, whose
    /// results it matches within 1e-6.
    fn reduce_on_host(
        &self,
        data: Vec<f32>,
        m: &Measured,
        reduction: Reduction,
        rows: Option<Vec<Vec<f64>>>,
    ) -> Reduced {
        let width = m.vectors.dims()[1];
        let is_fast = reduction == Reduction::CpuFast;
        let per_row = match rows {
            Some(rows) => rows,
            None if is_fast => {
                let wanted = fast::Wanted::of(&self.metrics);
                fast::matrix_metrics_of(&data, width, &self.cols, wanted)
            }
            None => reference::matrix_metrics(&data, width, &self.cols),
        };
        let mut metrics = Vec::new();
        for metric in &self.metrics {
            let (s, quantiles) = if metric.is_per_vector() {
                let (c, qs) = (self.cols.column(metric), &self.quantiles);
                if is_fast {
                    (
                        fast::aggregate(&per_row, c),
                        fast::quantiles(&per_row, c, qs),
                    )
                } else {
                    (
                        reference::aggregate(&per_row, c),
                        reference::quantiles(&per_row, c, qs),
                    )
                }
            } else if is_fast {
                let s = fast::across_vectors(&data, width, &per_row, metric);
                (s, Vec::new())
            } else {
                let s = reference::across_vectors(&data, width, &per_row, metric);
                (s, Vec::new())
            };
            metrics.push(MetricResult {
                metric: *metric,
                mean: s.mean,
                std: s.std,
                n: s.n as i64,
                quantiles,
            });
        }
        Reduced { metrics, per_row }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Position;

    fn measured(probe: usize, data: &[f32], width: usize, device: &Device) -> Measured {
        Measured {
            probe,
            layer: 0,
            site: "blocks.0.resid_post".into(),
            position: Position::Last,
            per_sample: false,
            vectors: Tensor::from_data(
                TensorData::new(data.to_vec(), [data.len() / width, width]),
                device,
            ),
        }
    }

    /// A host reduction's read-back: each measured tensor's activations and each probe set's
    /// statistics and (only where registered) losses come back under their owner, whatever
    /// their shapes, and the bytes count all of them.
    #[test]
    fn the_read_back_files_each_value_under_its_owner() {
        let device = Device::flex();
        let plan = ProbePlan {
            sites: vec![crate::metrics::SiteKind::ResidPost],
            positions: vec![Position::Last],
            metrics: vec!["l1".parse().unwrap(), "rankme".parse().unwrap()],
            quantiles: vec![0.5],
            per_sample: Default::default(),
        };
        let readback = ReadbackPlan::new(&plan, Reduction::CpuFast);
        let (a, b): (Vec<f32>, Vec<f32>) = ((0..6).map(|x| x as f32).collect(), vec![9.0; 8]);
        let tensors = [measured(0, &a, 3, &device), measured(1, &b, 4, &device)];
        let answers = [
            Answers {
                stats: Tensor::from_floats([1.0, 2.0], &device),
                losses: None,
            },
            Answers {
                stats: Tensor::from_floats([3.0, 4.0, 5.0, 6.0], &device),
                losses: Some(Tensor::from_floats([7.0, 8.0], &device)),
            },
        ];
        let read = readback.register(&tensors, &answers).execute();
        assert_eq!(read.bytes, 4 * (6 + 8 + 2 + 4 + 2));
        let mut got: Vec<Vec<f32>> = read
            .tensors
            .into_iter()
            .map(|mut r| r.take_registered(Read::Activations))
            .collect();
        assert_eq!(got.remove(0), a);
        assert_eq!(got.remove(0), b);
        assert_eq!(read.sets[0].stats, [1.0, 2.0]);
        assert_eq!(read.sets[0].losses, None);
        assert_eq!(read.sets[1].stats, [3.0, 4.0, 5.0, 6.0]);
        assert_eq!(read.sets[1].losses.as_deref(), Some(&[7.0, 8.0][..]));
    }
}
