//! End-to-end tests over real HTTP against a real Postgres, one fresh database
//! per test.

mod analytics;
mod analytics_import;
mod audit;
mod auth_and_errors;
mod campaign_lists;
mod campaigns;
mod concurrency;
mod console;
mod content;
mod control_characters;
mod early_413;
mod feed;
mod hostile_bodies;
mod kafka;
mod lead_imports;
mod lead_sync;
mod leads;
mod ops;
mod outage;
mod pagination;
mod rate_limits;
mod read_after_write;
mod replica;
mod scopes;
mod sharded_replay;
mod tasks;
mod traces;
mod webhooks;
