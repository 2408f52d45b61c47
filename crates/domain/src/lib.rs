//! The Marketing API's domain: aggregates that decide (`handle`: command → events)
//! and fold (`apply`: event → state), plus the validation that turns client input
//! into values that are valid by construction ("parse, don't validate").
//!
//! Nothing here does I/O. The command API loads an aggregate by folding its stream,
//! asks it to handle a command, and appends whatever events it returns; projectors
//! fold the same events into read models. Because both sides use this one fold, the
//! resource a write returns and the resource a read returns cannot drift apart.

pub mod analytics;
pub mod campaign;
pub mod content;
pub mod error;
pub mod event;
pub mod input;
pub mod lead;
pub mod money;
pub mod project;
pub mod task;
pub mod upcast;

pub use error::{FieldError, ValidationErrors};
pub use event::{DecodeError, DomainEvent};
pub use money::Money;
pub use project::ProjectSlug;
