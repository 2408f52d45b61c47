//! Wiring for the `marketing` binary, as a library so tests start exactly what
//! users run (see [`startup::Application`]).

pub mod audit;
pub mod cli;
pub mod config;
pub mod import_leads;
pub mod lead_gate;
pub mod media_gc;
pub mod openapi;
pub mod ops;
pub mod progress;
pub mod startup;
pub mod telemetry;
