//! End-to-end tests over real HTTP against a real Postgres, one fresh database
//! per test.

mod auth_and_errors;
mod campaigns;
mod concurrency;
mod leads;
mod ops;
mod pagination;
