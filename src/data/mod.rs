//! Data: the knowledge graph the model is trained on and the probe sets it is measured with.

pub mod probes;
pub mod rulegraph;
