//! Metrics for every SIRMS role: lock-free counters, gauges and histograms that the hot paths
//! update, the Prometheus text format they are rendered in, and the small HTTP endpoint that
//! serves them (`GET /metrics`).
//!
//! Each role owns its metrics as a plain struct of typed fields (no name lookup on the hot
//! path) and renders them on demand through [`Exposition`], so several roles in one process
//! (`sirms dev`) keep their numbers apart.

pub mod exposition;
pub mod http;
pub mod metric;

pub use exposition::Exposition;
pub use metric::{Counter, Gauge, GaugeGuard, Histogram, LATENCY_BUCKETS};

/// Something that can render its metrics.
pub trait Render: Send + Sync + 'static {
    /// Appends every metric to `out`.
    fn render(&self, out: &mut Exposition);
}
