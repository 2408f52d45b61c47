//! One shape for every aggregate.
//!
//! An aggregate is its live state type plus two pure functions: `decide` (a
//! command against the current [`Root`] → the events it produces, or why it is
//! refused) and `evolve` (one event → the next state). What every aggregate used
//! to carry by hand, the stream version and whether the stream was deleted, lives
//! once in the generic [`Root`], so an aggregate cannot get them wrong and the
//! command side can run every aggregate through one executor.
//!
//! The event enums name each event type exactly once, in [`domain_events!`],
//! which writes the `DomainEvent` impl (type names, JSON in and out) from it.

use crate::{DomainEvent, ProjectSlug};
use chrono::{DateTime, Utc};
use std::convert::Infallible;
use uuid::Uuid;

/// Where an event sits: when it was recorded and the stream version it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub at: DateTime<Utc>,
    pub version: i64,
}

/// Where a new aggregate owned by a campaign (a task, a content item, a lead)
/// goes: its id and its campaign, with that campaign's project. The command
/// side makes one only for a campaign it checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub project: ProjectSlug,
}

/// Implemented by each aggregate's live state (`CampaignState`, `TaskState`, ...).
pub trait Aggregate: Clone + Send + Sync + Sized + 'static {
    /// Lower-case name for messages and metric labels: `campaign`, `task`, ...
    const KIND: &'static str;
    /// Every stream of this aggregate is `<STREAM_PREFIX><uuid>`.
    const STREAM_PREFIX: &'static str;

    type Event: DomainEvent + Clone + Send + Sync;
    type Command: Clone + Send + Sync;
    type Error: Send;
    /// What folding and deciding need beyond the events themselves: `()` for
    /// most aggregates; a lead's key (its personal data is sealed with it).
    type Context: Send + Sync;
    /// Why an event could not be folded: [`Infallible`] unless folding needs
    /// the context to succeed (a lead's key that does not open its data).
    type FoldError: Send;

    /// The command's events, or why it is refused. `root` is the aggregate as
    /// folded so far (`root.version()` is `None` for a stream never written).
    fn decide(
        root: &Root<Self>,
        command: Self::Command,
        context: &Self::Context,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state; setting it to `None` deletes the aggregate.
    fn evolve(
        state: &mut Option<Self>,
        event: &Self::Event,
        recorded: Recorded,
        context: &Self::Context,
    ) -> Result<(), Self::FoldError>;

    /// The resource's version (its ETag), as stored in the state.
    fn version(&self) -> i64;

    /// The stream of the aggregate with this id.
    fn stream_id(id: Uuid) -> String {
        format!("{}{id}", Self::STREAM_PREFIX)
    }
}

/// An aggregate that needs no context and whose events always fold: every one
/// but the lead. It states only what is its own (the items mean what they mean
/// in [`Aggregate`]), and is an [`Aggregate`] through the impl below, so its
/// `decide` and `evolve` carry no unused context and no fold error that
/// cannot happen.
pub trait PlainAggregate: Clone + Send + Sync + Sized + 'static {
    const KIND: &'static str;
    const STREAM_PREFIX: &'static str;
    type Event: DomainEvent + Clone + Send + Sync;
    type Command: Clone + Send + Sync;
    type Error: Send;

    fn decide(root: &Root<Self>, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    fn evolve(state: &mut Option<Self>, event: &Self::Event, recorded: Recorded);

    fn version(&self) -> i64;
}

impl<P: PlainAggregate> Aggregate for P {
    const KIND: &'static str = <P as PlainAggregate>::KIND;
    const STREAM_PREFIX: &'static str = <P as PlainAggregate>::STREAM_PREFIX;
    type Event = <P as PlainAggregate>::Event;
    type Command = <P as PlainAggregate>::Command;
    type Error = <P as PlainAggregate>::Error;
    type Context = ();
    type FoldError = Infallible;

    fn decide(root: &Root<Self>, command: Self::Command, _: &()) -> Result<Vec<Self::Event>, Self::Error> {
        <P as PlainAggregate>::decide(root, command)
    }

    fn evolve(
        state: &mut Option<Self>,
        event: &Self::Event,
        recorded: Recorded,
        _: &(),
    ) -> Result<(), Infallible> {
        <P as PlainAggregate>::evolve(state, event, recorded);
        Ok(())
    }

    fn version(&self) -> i64 {
        <P as PlainAggregate>::version(self)
    }
}

/// A live state that records when it last changed and at which version
/// (`updated_at`, and `version`, its ETag), so each event that changes it
/// stamps it.
pub trait Stamped {
    fn stamp(&mut self, recorded: Recorded);
}

/// Folds a change into the live state and stamps it with the event's time and
/// version. A change to an aggregate that is not live (never created, or
/// deleted) folds to nothing: there is no state for it to change.
pub fn change<S: Stamped>(state: &mut Option<S>, recorded: Recorded, change: impl FnOnce(&mut S)) {
    if let Some(state) = state.as_mut() {
        change(state);
        state.stamp(recorded);
    }
}

/// An aggregate as folded from its stream: the live state (`None` if the stream
/// does not exist or the aggregate was deleted), the version of the last event,
/// and whether a deletion was folded.
#[derive(Debug, Clone)]
pub struct Root<A> {
    state: Option<A>,
    version: Option<i64>,
    deleted: bool,
}

impl<A> Default for Root<A> {
    fn default() -> Self {
        Self {
            state: None,
            version: None,
            deleted: false,
        }
    }
}

impl<A: Aggregate> Root<A> {
    /// Rebuilds the aggregate from a stored resource (a read model's row), so a
    /// projection folds further events with the domain's own `evolve`.
    pub fn from_state(state: A) -> Self {
        Self {
            version: Some(state.version()),
            state: Some(state),
            deleted: false,
        }
    }

    /// The live aggregate; `None` if it never existed or was deleted.
    pub fn state(&self) -> Option<&A> {
        self.state.as_ref()
    }

    /// Version of the last folded event; `None` for a stream that does not exist.
    pub fn version(&self) -> Option<i64> {
        self.version
    }

    /// True once the stream has any event (a create must find it empty).
    pub fn exists(&self) -> bool {
        self.version.is_some()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// `Ok` for a stream never written, which is what a create needs;
    /// `exists` otherwise.
    pub fn empty_or<E>(&self, exists: E) -> Result<(), E> {
        if self.exists() {
            Err(exists)
        } else {
            Ok(())
        }
    }

    /// The live state, or `not_found` when there is none.
    pub fn live_or<E>(&self, not_found: E) -> Result<&A, E> {
        self.state.as_ref().ok_or(not_found)
    }

    /// Decides what a command does. Never mutates: the caller appends the events
    /// and then folds them with [`Root::fold`].
    pub fn decide(&self, command: A::Command, context: &A::Context) -> Result<Vec<A::Event>, A::Error> {
        A::decide(self, command, context)
    }

    /// Folds one event recorded at `recorded_at` as stream version `version`.
    pub fn fold(
        &mut self,
        event: &A::Event,
        recorded_at: DateTime<Utc>,
        version: i64,
        context: &A::Context,
    ) -> Result<(), A::FoldError> {
        let recorded = Recorded {
            at: recorded_at,
            version,
        };
        let was_live = self.state.is_some();
        A::evolve(&mut self.state, event, recorded, context)?;
        self.version = Some(version);
        if was_live && self.state.is_none() {
            self.deleted = true;
        }
        Ok(())
    }
}

/// Aggregates that need no context and cannot fail to fold get the plain
/// `handle` / `apply` pair.
impl<A: Aggregate<Context = (), FoldError = Infallible>> Root<A> {
    pub fn handle(&self, command: A::Command) -> Result<Vec<A::Event>, A::Error> {
        self.decide(command, &())
    }

    pub fn apply(&mut self, event: &A::Event, recorded_at: DateTime<Utc>, version: i64) {
        match self.fold(event, recorded_at, version, &()) {
            Ok(()) => {}
            Err(never) => match never {},
        }
    }
}

/// Declares an aggregate's event enum, each variant wrapping its payload struct
/// and naming its stored event type once, and writes the [`DomainEvent`] impl:
///
/// ```text
/// domain_events! {
///     /// Everything that happens to a campaign.
///     #[derive(Debug, Clone, PartialEq)]
///     pub enum CampaignEvent: "campaign events" {
///         Created(CampaignCreated) = "CampaignCreated",
///         Deleted(CampaignDeleted) = "CampaignDeleted",
///     }
///     every event has { campaign_id: Uuid }
///     which is all CampaignDeleted carries
/// }
/// ```
///
/// The optional `every event has` line names fields every payload carries:
/// each gets an accessor on the enum (`event.campaign_id()`). A payload that
/// carries nothing else (a deletion names only what is deleted) is declared
/// by the `which is all` line, with the derives every payload has.
///
/// Every payload is at schema version 1 today. When one changes shape, bump its
/// version here (`Created(CampaignCreated) = "CampaignCreated" @ 2`) and add an
/// upcaster for the old one in [`crate::upcast`].
#[macro_export]
macro_rules! domain_events {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $what:literal {
            $($variant:ident($payload:ty) = $type_name:literal $(@ $schema:literal)?),+ $(,)?
        }
        $(every event has { $($field:ident: $field_ty:ty),+ $(,)? })?
        $(which is all $bare:ident carries)?
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($variant($payload)),+
        }

        impl $name {
            /// Every event type name this enum decodes, as stored in the log.
            pub const TYPES: &'static [&'static str] = &[$($type_name),+];
        }

        $crate::domain_events!(@accessors $name [$($variant)+] [$($($field: $field_ty),+)?]);
        $crate::domain_events!(@bare [$($bare)?] [$($($field: $field_ty),+)?]);

        impl $crate::DomainEvent for $name {
            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $type_name),+
                }
            }

            fn schema_version(&self) -> i32 {
                match self {
                    $(Self::$variant(_) => $crate::domain_events!(@schema $($schema)?)),+
                }
            }

            fn to_data(&self) -> ::serde_json::Value {
                let data = match self {
                    $(Self::$variant(e) => ::serde_json::to_value(e)),+
                };
                data.expect(concat!($what, " serialize to JSON"))
            }

            fn from_data(event_type: &str, data: ::serde_json::Value) -> Result<Self, $crate::DecodeError> {
                match event_type {
                    $($type_name => ::serde_json::from_value(data)
                        .map(Self::$variant)
                        .map_err(|e| $crate::DecodeError::malformed(event_type, e)),)+
                    other => Err($crate::DecodeError::UnknownType(other.to_owned())),
                }
            }

            fn from_data_ref(event_type: &str, data: &::serde_json::Value) -> Result<Self, $crate::DecodeError> {
                match event_type {
                    $($type_name => <$payload as ::serde::Deserialize>::deserialize(data)
                        .map(Self::$variant)
                        .map_err(|e| $crate::DecodeError::malformed(event_type, e)),)+
                    other => Err($crate::DecodeError::UnknownType(other.to_owned())),
                }
            }
        }
    };
    (@accessors $name:ident $variants:tt [$($field:ident: $field_ty:ty),*]) => {
        $($crate::domain_events!(@accessor $name $variants $field $field_ty);)*
    };
    (@accessor $name:ident [$($variant:ident)+] $field:ident $field_ty:ty) => {
        impl $name {
            /// A field every payload of this enum carries.
            pub fn $field(&self) -> $field_ty {
                match self {
                    $(Self::$variant(e) => e.$field),+
                }
            }
        }
    };
    (@bare [] $fields:tt) => {};
    (@bare [$bare:ident] [$($field:ident: $field_ty:ty),+]) => {
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        pub struct $bare {
            $(pub $field: $field_ty),+
        }
    };
    (@schema) => { 1 };
    (@schema $schema:literal) => { $schema };
}

/// The given/when/then harness every aggregate's tests share: given a history,
/// fold it exactly as the command side and the projections do.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Aggregate, Placement, Root};
    use crate::analytics::AnalyticsError;
    use crate::campaign::CampaignError;
    use crate::content::ContentError;
    use crate::lead::LeadError;
    use crate::task::TaskError;
    use crate::{DomainEvent, ProjectSlug, ValidationErrors};
    use chrono::{DateTime, TimeZone, Utc};
    use serde::de::DeserializeOwned;
    use std::fmt::Debug;
    use uuid::Uuid;

    /// When the harness records event number `n`: a fixed time plus `n` seconds.
    pub fn at(n: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + n, 0).unwrap()
    }

    /// The aggregate after `events`, stream versions from 0, one second apart.
    pub fn given<A: Aggregate>(events: &[A::Event], context: &A::Context) -> Root<A>
    where
        A::FoldError: std::fmt::Debug,
    {
        let mut root = Root::default();
        for (version, event) in events.iter().enumerate() {
            let version = version as i64;
            root.fold(event, at(version), version, context)
                .expect("the given history folds");
        }
        root
    }

    /// The campaign the tests' owned aggregates belong to.
    pub fn campaign_id() -> Uuid {
        Uuid::from_u128(42)
    }

    /// Where a test's new owned aggregate `id` goes: under [`campaign_id`],
    /// in project `acme`.
    pub fn placed(id: Uuid) -> Placement {
        Placement {
            id,
            campaign_id: campaign_id(),
            project: ProjectSlug::parse("acme").unwrap(),
        }
    }

    /// A command's refusal, which for invalid input carries what was invalid.
    pub trait Refusal: Debug + Sized {
        fn invalid(self) -> Result<ValidationErrors, Self>;
    }

    /// Every aggregate's error names its refusal of invalid input `Invalid`.
    macro_rules! refusals {
        ($($error:ty),+) => {$(
            impl Refusal for $error {
                fn invalid(self) -> Result<ValidationErrors, Self> {
                    match self {
                        Self::Invalid(errors) => Ok(errors),
                        other => Err(other),
                    }
                }
            }
        )+};
    }
    refusals!(CampaignError, TaskError, ContentError, LeadError, AnalyticsError);

    /// The fields a refusal of invalid input names, in order; anything else
    /// fails the test.
    pub fn invalid_fields<T: Debug, E: Refusal>(result: Result<T, E>) -> Vec<String> {
        match result.map_err(E::invalid) {
            Err(Ok(errors)) => errors.0.into_iter().map(|e| e.field).collect(),
            Err(Err(other)) => panic!("expected a validation error, got {other:?}"),
            Ok(other) => panic!("expected a validation error, got {other:?}"),
        }
    }

    /// The first field a refusal of invalid input names.
    pub fn invalid_field<T: Debug, E: Refusal>(result: Result<T, E>) -> String {
        invalid_fields(result).remove(0)
    }

    /// A request body of a test, parsed as the API parses it.
    pub fn parsed<T: DeserializeOwned>(json: &str) -> Box<T> {
        Box::new(crate::input::from_json_slice(json.as_bytes()).expect("a valid body"))
    }

    /// Decides `command` against `live` and folds what it decided, as the
    /// command side does, appending it to `log` (whose length is the next
    /// stream version). The new events, or the refusal.
    pub fn record<'a, A: Aggregate>(
        live: &mut Root<A>,
        log: &'a mut Vec<A::Event>,
        command: A::Command,
        context: &A::Context,
    ) -> Result<&'a [A::Event], A::Error>
    where
        A::FoldError: std::fmt::Debug,
    {
        let events = live.decide(command, context)?;
        let first = log.len();
        for event in events {
            let version = log.len() as i64;
            live.fold(&event, at(version), version, context)
                .expect("a decided event folds");
            log.push(event);
        }
        Ok(&log[first..])
    }

    /// The aggregate folded from `log` read back from its stored JSON, as a
    /// projection or an auditor reads it.
    pub fn replay_stored<A: Aggregate>(log: &[A::Event], context: &A::Context) -> Root<A>
    where
        A::FoldError: std::fmt::Debug,
    {
        let decoded: Vec<A::Event> = log
            .iter()
            .map(|event| {
                A::Event::from_data(event.event_type(), event.to_data()).expect("stored events decode")
            })
            .collect();
        given(&decoded, context)
    }
}
