//! How far a probe set moved from the unshifted samples: the bigram `distance` and `novelty`
//! every set records.

use std::collections::HashSet;

use super::ProbeSet;

/// Sets each probe set's `distance` and `novelty` against the unshifted samples `id`.
pub(super) fn measure_shift(sets: &mut [ProbeSet], id: &[Vec<u32>]) {
    let pool: HashSet<(u32, u32)> = id
        .iter()
        .flat_map(|s| s.windows(2).map(|w| (w[0], w[1])))
        .collect();
    for set in sets {
        set.distance = distance(set, id);
        set.novelty = novelty(set, &pool);
    }
}

/// The fraction of all the set's bigrams that occur nowhere in the unshifted set.
pub fn novelty(probe: &ProbeSet, pool: &HashSet<(u32, u32)>) -> f64 {
    let (mut novel, mut total) = (0usize, 0usize);
    for i in 0..probe.samples() {
        for w in probe.sample(i).windows(2) {
            total += 1;
            novel += !pool.contains(&(w[0], w[1])) as usize;
        }
    }
    novel as f64 / total.max(1) as f64
}

/// The mean fraction of a sample's input bigrams absent from the same-index unshifted sample.
pub fn distance(probe: &ProbeSet, id: &[Vec<u32>]) -> f64 {
    let n = probe.samples().min(id.len());
    if n == 0 {
        return f64::NAN;
    }
    let total: f64 = (0..n)
        .map(|i| {
            let reference: HashSet<(u32, u32)> = id[i].windows(2).map(|w| (w[0], w[1])).collect();
            let sample = probe.sample(i);
            let bigrams = sample.len() - 1;
            let missing = sample
                .windows(2)
                .filter(|w| !reference.contains(&(w[0], w[1])))
                .count();
            missing as f64 / bigrams as f64
        })
        .sum();
    total / n as f64
}
