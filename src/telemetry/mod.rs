//! Telemetry: Prometheus metrics (this module) — per-statement events and their sinks come
//! with the telemetry issue. Metric names live in [`metrics`] only.

pub mod metrics;
