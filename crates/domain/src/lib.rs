//! The Marketing API's domain: aggregates that decide (`handle`: command → events)
//! and fold (`apply`: event → state), plus the validation that turns client input
//! into values that are valid by construction ("parse, don't validate").
//!
//! Nothing here does I/O. Every aggregate implements one trait,
//! [`aggregate::Aggregate`] (decide: command → events; evolve: event → state;
//! those that need no context through [`aggregate::PlainAggregate`]),
//! and is held in the generic [`aggregate::Root`] that tracks its stream version
//! and deletion. The command API folds a stream into a `Root`, asks it to decide,
//! and appends whatever events it returns. The projections of campaigns, tasks,
//! content and leads fold with this same `evolve` (from the stored row onwards),
//! so the resource a write returns and the one a read returns cannot drift apart;
//! the analytics rollups are sums of their own, over the same events.

pub mod aggregate;
pub mod analytics;
pub mod campaign;
pub mod changes;
pub mod choice;
pub mod content;
pub mod currency;
pub mod error;
pub mod event;
pub mod input;
pub mod lead;
pub mod money;
pub mod project;
pub mod task;
pub mod time_zone;
pub mod upcast;

pub use aggregate::{Aggregate, Recorded, Root};
pub use currency::Currency;
pub use error::{FieldError, ValidationErrors};
pub use event::{DecodeError, DomainEvent};
pub use money::Money;
pub use project::ProjectSlug;
pub use time_zone::TimeZone;
