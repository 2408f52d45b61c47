//! The write kernel: every command of every aggregate runs through
//! [`Writer::execute`], so the steps below are written once:
//!
//! 1. load the aggregate by folding its stream (skipped for the first try of a
//!    create: a new id has no history);
//! 2. tenancy: a campaign must belong to the caller's project, a child must
//!    belong to the campaign in the URL, which was itself checked
//!    ([`Writer::campaign`]); anything else is "not found", never "forbidden",
//!    so ids of other projects cannot be probed;
//! 3. `If-Match`: a stale version is 412;
//! 4. let the aggregate decide (pure, in the domain);
//! 5. append at the version it was loaded at, with the metadata built in one
//!    place ([`Writer::metadata`]), together with whatever the [`Hooks`] must
//!    write in the same transaction (a lead's email claim and key);
//! 6. on a concurrent write, start over (unless `If-Match` pinned a version:
//!    then the client's view is stale, 412), at most [`MAX_ATTEMPTS`] times;
//! 7. wait until the read models that consume the new events include them, so
//!    the client's next GET sees them (bounded by the read-after-write timeout).
//!
//! Retries of a request with the same `Idempotency-Key` derive the same event
//! ids ([`IdSource`]): the log stores them once, and the kernel answers with the
//! stored aggregate instead of a second change.

use crate::CommandState;
use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::header::{CONTENT_TYPE, ETAG, LOCATION};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::aggregate::{Aggregate, Root};
use domain::campaign::{Campaign, CampaignState};
use domain::{DomainEvent, ProjectSlug};
use event_store::{AppendError, AppendOutcome, ExpectedVersion, LogPosition, NewEvent, StreamAppend};
use projector::Written;
use serde::Serialize;
use serde_json::{json, Value};
use trace_context::{TraceParent, METADATA_KEY};
use uuid::Uuid;
use web::extract::{etag, IfMatchVersion, RequestId};
use web::idempotency::{IdSource, IdempotencyKey};
use web::request_trace::RequestTrace;
use web::{ApiError, Caller};

/// Attempts at a write that keeps losing races before it answers 409.
pub(crate) const MAX_ATTEMPTS: usize = 5;
pub(crate) const CAMPAIGN_NOT_FOUND: &str = "Campaign not found";

/// What the command side knows about an aggregate beyond the domain: how its
/// refusals read over HTTP and where it lives in the API.
pub(crate) trait Resource: Aggregate + Serialize {
    /// The 404 message, e.g. "Task not found".
    const NOT_FOUND: &'static str;
    /// Namespace of the event ids derived from an `Idempotency-Key`.
    const EVENT_IDS: &'static str = "event";

    fn to_api_error(error: Self::Error) -> ApiError;
    fn fold_error(error: Self::FoldError) -> ApiError;
    fn is_create(command: &Self::Command) -> bool;
    /// A command that creates its aggregate when the stream is empty and
    /// changes it otherwise (a restated analytics day): always loaded, and
    /// checked like a change only when the stream exists.
    fn is_upsert(_command: &Self::Command) -> bool {
        false
    }
    /// The campaign this aggregate belongs to (a campaign's is its own id).
    fn campaign_id(&self) -> Uuid;
    /// The project of a top-level aggregate; children are checked through
    /// their campaign instead.
    fn project(&self) -> Option<&ProjectSlug> {
        None
    }
    /// The resource's URL, sent as `Location` on a create.
    fn location(&self) -> String;
    /// The ETag, if the resource has versions.
    fn etag(&self) -> Option<i64> {
        Some(self.version())
    }
}

/// A campaign that exists, is live and belongs to the caller's project, as
/// folded at command time. Only [`Writer::campaign`] makes one, so a write
/// under a campaign cannot skip the check.
pub(crate) struct CheckedCampaign {
    root: Campaign,
}

impl CheckedCampaign {
    pub fn id(&self) -> Uuid {
        self.live().id
    }

    pub fn live(&self) -> &CampaignState {
        self.root.state().expect("a checked campaign is live")
    }

    pub fn root(&self) -> &Campaign {
        &self.root
    }
}

/// One command against one aggregate.
/// The campaign a write belongs to: the one in its URL, the one its aggregate
/// names, or itself for a campaign's creation. It keys the read-model shard a
/// write waits for, so `None` (unknown) waits for every shard.
fn campaign_of<A: Resource>(write: &Write<'_, A>, state: Option<&A>) -> Option<Uuid> {
    match (write.parent, state) {
        (Some(campaign), _) => Some(campaign.id()),
        (None, Some(live)) => Some(live.campaign_id()),
        (None, None) => (A::STREAM_PREFIX == domain::campaign::STREAM_PREFIX).then_some(write.id),
    }
}

pub(crate) struct Write<'a, A: Aggregate> {
    pub id: Uuid,
    /// The campaign in the URL, for aggregates that live under one.
    pub parent: Option<&'a CheckedCampaign>,
    pub if_match: Option<IfMatchVersion>,
    pub command: A::Command,
}

impl<'a, A: Aggregate> Write<'a, A> {
    pub fn new(id: Uuid, command: A::Command) -> Self {
        Self {
            id,
            parent: None,
            if_match: None,
            command,
        }
    }

    pub fn under(mut self, campaign: &'a CheckedCampaign) -> Self {
        self.parent = Some(campaign);
        self
    }

    pub fn if_match(mut self, if_match: Option<IfMatchVersion>) -> Self {
        self.if_match = if_match;
        self
    }
}

/// Work a write needs besides the append. The default does nothing, which is
/// all most aggregates need.
#[async_trait]
pub(crate) trait Hooks<A: Aggregate>: Send {
    /// The context to decide and fold with. `new` is true for a stream that is
    /// being created. `None` means the aggregate's data is gone (an erased
    /// lead): it is then "not found".
    async fn context(
        &mut self,
        state: &CommandState,
        id: Uuid,
        new: bool,
    ) -> Result<Option<A::Context>, ApiError>;

    /// After the decision, before the append, outside any transaction: for
    /// work that the events refer to and that must exist first (a media file
    /// moved into place), so an appended event never names a missing one.
    async fn before_append(&mut self) -> Result<(), ApiError> {
        Ok(())
    }

    /// True if [`Hooks::in_transaction`] has work: the append then runs in a
    /// Postgres transaction the kernel opens.
    fn transactional(&self) -> bool {
        false
    }

    /// Runs in the append's transaction, before the append, so both commit or
    /// neither does. `before` and `after` are the aggregate around the events.
    /// On a log outside Postgres (KurrentDB) the transaction is its own and
    /// commits before the append ("claim first, then append"): see
    /// [`Hooks::refused`] and [`Hooks::after_append`].
    async fn in_transaction(
        &mut self,
        _tx: &deadpool_postgres::Transaction<'_>,
        _before: &Root<A>,
        _after: &Root<A>,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Log outside Postgres only: the log refused the append (a conflict),
    /// so nothing was written: undo what [`Hooks::in_transaction`] committed.
    /// Not called when the append's outcome is unknown (a store error): the
    /// rows then stay, and whoever next needs them checks the log.
    async fn refused(&mut self, _state: &CommandState, _before: &Root<A>, _after: &Root<A>) {}

    /// Log outside Postgres only: work that must follow the append rather
    /// than precede it (releasing what the events give up).
    async fn after_append(
        &mut self,
        _state: &CommandState,
        _before: &Root<A>,
        _after: &Root<A>,
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

/// For aggregates that need no context and no extra work.
pub(crate) struct NoHooks;

#[async_trait]
impl<A: Aggregate<Context = ()>> Hooks<A> for NoHooks {
    async fn context(&mut self, _: &CommandState, _: Uuid, _: bool) -> Result<Option<()>, ApiError> {
        Ok(Some(()))
    }
}

/// Who is writing, through which process: everything a write handler needs
/// besides what it parses. Extracted before the body, so a request without a
/// valid key is 401 before its body is read.
pub struct Writer {
    state: CommandState,
    caller: Caller,
    request_id: String,
    /// The request's trace context, stored with every event it appends.
    trace: TraceParent,
    ids: IdSource,
    idempotency: Option<IdempotencyKey>,
    /// Set for the items of a batch: their writes record where they got to
    /// here instead of each waiting for the read models, and the batch waits
    /// once, for the last of them.
    deferred: Option<Deferred>,
}

/// The furthest log position the writes of a batch reached, for its one
/// read-after-write wait.
#[derive(Clone, Default)]
pub(crate) struct Deferred(std::sync::Arc<std::sync::Mutex<Option<LogPosition>>>);

impl Deferred {
    fn reached(&self, position: LogPosition) {
        let mut last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = (*last).max(Some(position));
    }

    pub(crate) fn last(&self) -> Option<LogPosition> {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FromRequestParts<CommandState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &CommandState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Ok(RequestId(request_id)) = RequestId::from_request_parts(parts, state).await;
        let Ok(RequestTrace(trace)) = RequestTrace::from_request_parts(parts, state).await;
        let Ok(ids) = IdSource::from_request_parts(parts, state).await;
        Ok(Self {
            state: state.clone(),
            caller,
            request_id,
            trace,
            ids,
            idempotency: parts.extensions.get::<IdempotencyKey>().cloned(),
            deferred: None,
        })
    }
}

impl Writer {
    pub(crate) fn state(&self) -> &CommandState {
        &self.state
    }

    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    pub(crate) fn ids(&self) -> &IdSource {
        &self.ids
    }

    /// The writer of item `n` of a batch: ids derived from the request's
    /// `Idempotency-Key` and the item's place (so a retried batch recreates
    /// nothing, and two items never share an event id), and its read-after-
    /// write wait left to the batch (`deferred`).
    pub(crate) fn batch_item(&self, n: usize, deferred: &Deferred) -> Writer {
        let ids = IdSource::new(self.idempotency.as_ref().map(|key| IdempotencyKey {
            project: key.project.clone(),
            key: format!("{}\u{0}batch item\u{0}{n}", key.key),
        }));
        Writer {
            state: self.state.clone(),
            caller: self.caller.clone(),
            request_id: self.request_id.clone(),
            trace: self.trace,
            ids,
            idempotency: self.idempotency.clone(),
            deferred: Some(deferred.clone()),
        }
    }

    /// The request's `Idempotency-Key`, if it had one.
    pub(crate) fn idempotency(&self) -> Option<&IdempotencyKey> {
        self.idempotency.as_ref()
    }

    /// Who wrote an event and why, as recorded in its metadata: the same keys
    /// for every event the API appends.
    pub(crate) fn metadata(&self, campaign_id: Uuid) -> Value {
        json!({
            "project": self.caller.project,
            "api_key_id": self.caller.key_id,
            "api_key_name": self.caller.key_name,
            "request_id": self.request_id,
            "correlation_id": self.request_id,
            "campaign_id": campaign_id,
            METADATA_KEY: self.trace.to_string(),
        })
    }

    /// The campaign named in a URL, checked at command time from its own
    /// stream: it exists, is live and is the caller's project's.
    pub(crate) async fn campaign(&self, campaign_id: Uuid) -> Result<CheckedCampaign, ApiError> {
        let root: Campaign = load_root(&self.state, campaign_id, &()).await?;
        match root.state() {
            Some(live) if live.project == self.caller.project => Ok(CheckedCampaign { root }),
            _ => Err(ApiError::NotFound(CAMPAIGN_NOT_FOUND)),
        }
    }

    /// Runs one command of an aggregate that needs no hooks.
    pub(crate) async fn execute<A>(&self, write: Write<'_, A>) -> Result<Root<A>, ApiError>
    where
        A: Resource<Context = ()>,
    {
        self.execute_with(write, &mut NoHooks).await
    }

    /// Runs one command; see the module docs for the steps.
    pub(crate) async fn execute_with<A: Resource>(
        &self,
        write: Write<'_, A>,
        hooks: &mut impl Hooks<A>,
    ) -> Result<Root<A>, ApiError> {
        let creating = A::is_create(&write.command);
        for attempt in 0..MAX_ATTEMPTS {
            let (before, context) = if creating && attempt == 0 {
                let context = hooks.context(&self.state, write.id, true).await?;
                (Root::default(), context.ok_or(ApiError::NotFound(A::NOT_FOUND))?)
            } else {
                self.load(write.id, hooks).await?
            };
            let new_upsert = A::is_upsert(&write.command) && !before.exists();
            if !creating && !new_upsert {
                self.check_existing(&before, &write)?;
            }
            let events = before
                .decide(write.command.clone(), &context)
                .map_err(A::to_api_error)?;
            if events.is_empty() {
                return Ok(before);
            }
            let stream_id = A::stream_id(write.id);
            let campaign_id = campaign_of(&write, before.state());
            let written: Vec<Written<'_>> = events
                .iter()
                .map(|event| Written {
                    stream_id: &stream_id,
                    event_type: event.event_type(),
                    campaign_id,
                })
                .collect();
            match self.append(&write, &before, &context, &events, hooks).await? {
                Appended::Done(after, position) => {
                    self.after_write(position, &written).await;
                    return Ok(after);
                }
                Appended::Stored(position) => {
                    // A retry of a request that already went through: answer
                    // with what is stored (the idempotent result), not a second
                    // change.
                    let (stored, _) = self.load(write.id, hooks).await?;
                    self.after_write(position, &written).await;
                    return Ok(stored);
                }
                Appended::Conflict => {
                    if matches!(write.if_match, Some(IfMatchVersion::Exact(_))) {
                        return Err(stale::<A>());
                    }
                    // A create that lost: the next attempt folds the stream
                    // that won, and the domain refuses with its own message.
                    metrics::counter!("marketing_write_conflicts_total", "aggregate" => A::KIND).increment(1);
                }
            }
        }
        Err(ApiError::Conflict(format!(
            "The {} is being modified concurrently; retry the request",
            A::KIND
        )))
    }

    /// Folds the aggregate's stream with the context its hooks provide.
    async fn load<A: Resource>(
        &self,
        id: Uuid,
        hooks: &mut impl Hooks<A>,
    ) -> Result<(Root<A>, A::Context), ApiError> {
        let context = hooks
            .context(&self.state, id, false)
            .await?
            .ok_or(ApiError::NotFound(A::NOT_FOUND))?;
        let root = load_root(&self.state, id, &context).await?;
        Ok((root, context))
    }

    /// Tenancy and `If-Match` for a command on an aggregate that must exist.
    fn check_existing<A: Resource>(&self, root: &Root<A>, write: &Write<'_, A>) -> Result<(), ApiError> {
        let live = root.live_or(ApiError::NotFound(A::NOT_FOUND))?;
        let ours = match write.parent {
            Some(campaign) => live.campaign_id() == campaign.id(),
            None => live.project().is_some_and(|p| *p == self.caller.project),
        };
        if !ours {
            return Err(ApiError::NotFound(A::NOT_FOUND));
        }
        match write.if_match {
            None | Some(IfMatchVersion::Any) => Ok(()),
            Some(IfMatchVersion::Exact(v)) if v == live.version() => Ok(()),
            Some(_) => Err(stale::<A>()),
        }
    }

    /// Appends the events (with the hooks' work), and folds them.
    async fn append<A: Resource>(
        &self,
        write: &Write<'_, A>,
        before: &Root<A>,
        context: &A::Context,
        events: &[A::Event],
        hooks: &mut impl Hooks<A>,
    ) -> Result<Appended<A>, ApiError> {
        let recorded_at = event_store::now();
        let first = before.version().map_or(0, |v| v + 1);
        let mut after = before.clone();
        for (n, event) in events.iter().enumerate() {
            after
                .fold(event, recorded_at, first + n as i64, context)
                .map_err(A::fold_error)?;
        }
        let campaign_id = campaign_of(write, after.state().or(before.state())).unwrap_or(write.id);
        let metadata = self.metadata(campaign_id);
        let append = StreamAppend {
            stream_id: A::stream_id(write.id),
            expected: before
                .version()
                .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
            events: events
                .iter()
                .enumerate()
                .map(|(n, event)| NewEvent {
                    event_id: self.ids.id(A::EVENT_IDS, n),
                    event_type: event.event_type().to_owned(),
                    schema_version: event.schema_version(),
                    data: event.to_data(),
                    metadata: metadata.clone(),
                    recorded_at,
                })
                .collect(),
        };
        hooks.before_append().await?;
        let result = if !hooks.transactional() {
            self.state
                .store
                .append(&append.stream_id, append.expected, append.events.clone())
                .await
                .map_err(AppendFailure::Store)
        } else if self.state.store.in_postgres() {
            self.append_in_transaction(append.clone(), before, &after, hooks)
                .await
        } else {
            self.claim_then_append(append.clone(), before, &after, hooks)
                .await
        };
        match result {
            Ok(outcome) if outcome.already_stored => Ok(Appended::Stored(outcome.last_position)),
            Ok(outcome) => Ok(Appended::Done(after, outcome.last_position)),
            Err(AppendFailure::Store(AppendError::Conflict { .. })) => {
                self.conflict_or_replay(&append, before).await
            }
            Err(AppendFailure::Store(AppendError::EventIdReused(_))) => Err(ApiError::Conflict(
                "Idempotency-Key was already used with a different request".into(),
            )),
            Err(AppendFailure::Store(other)) => Err(ApiError::internal(other)),
            Err(AppendFailure::Hook(error)) => match self.replayed(&append, before).await? {
                Some(position) => Ok(Appended::Stored(position)),
                None => Err(error),
            },
        }
    }

    /// The append and the hooks' work in one Postgres transaction.
    async fn append_in_transaction<A: Resource>(
        &self,
        append: StreamAppend,
        before: &Root<A>,
        after: &Root<A>,
        hooks: &mut impl Hooks<A>,
    ) -> Result<AppendOutcome, AppendFailure> {
        let mut client = self.state.pool.get().await.map_err(hook_error)?;
        let tx = client.transaction().await.map_err(hook_error)?;
        // The hooks' rows first, then the events: every writer that claims
        // (creates, updates, imports) takes its locks in that order, so two of
        // them cannot deadlock on each other's claims and events.
        hooks
            .in_transaction(&tx, before, after)
            .await
            .map_err(AppendFailure::Hook)?;
        let mut outcomes = event_store::append_in_transaction(&tx, std::slice::from_ref(&append))
            .await
            .map_err(AppendFailure::Store)?;
        tx.commit().await.map_err(hook_error)?;
        drop(client);
        self.state.store.notify_committed();
        Ok(outcomes.remove(0))
    }

    /// The hooks' rows and the append without a shared transaction (a log
    /// outside Postgres, docs/kurrentdb.md): the rows commit first, so a
    /// claim decides the race before anything is appended; a refused append
    /// undoes them; work that gives something up runs after the append.
    async fn claim_then_append<A: Resource>(
        &self,
        append: StreamAppend,
        before: &Root<A>,
        after: &Root<A>,
        hooks: &mut impl Hooks<A>,
    ) -> Result<AppendOutcome, AppendFailure> {
        let mut client = self.state.pool.get().await.map_err(hook_error)?;
        let tx = client.transaction().await.map_err(hook_error)?;
        hooks
            .in_transaction(&tx, before, after)
            .await
            .map_err(AppendFailure::Hook)?;
        tx.commit().await.map_err(hook_error)?;
        drop(client);
        let outcome = match self
            .state
            .store
            .append(&append.stream_id, append.expected, append.events)
            .await
        {
            Ok(outcome) => outcome,
            Err(refused @ (AppendError::Conflict { .. } | AppendError::EventIdReused(_))) => {
                hooks.refused(&self.state, before, after).await;
                return Err(AppendFailure::Store(refused));
            }
            Err(other) => return Err(AppendFailure::Store(other)),
        };
        hooks
            .after_append(&self.state, before, after)
            .await
            .map_err(AppendFailure::Hook)?;
        Ok(outcome)
    }

    /// A conflicting create may be the retry of one that already went through.
    async fn conflict_or_replay<A: Resource>(
        &self,
        append: &StreamAppend,
        before: &Root<A>,
    ) -> Result<Appended<A>, ApiError> {
        Ok(match self.replayed(append, before).await? {
            Some(position) => Appended::Stored(position),
            None => Appended::Conflict,
        })
    }

    /// For a create whose append or hooks were refused: if the stream's first
    /// event is the one this request would have written (the same
    /// Idempotency-Key derives the same ids), the request already went through.
    async fn replayed<A: Resource>(
        &self,
        append: &StreamAppend,
        before: &Root<A>,
    ) -> Result<Option<LogPosition>, ApiError> {
        if before.exists() {
            return Ok(None);
        }
        let stored = self.state.store.read_stream(&append.stream_id).await?;
        let ours = stored.first().map(|e| e.event_id) == append.events.first().map(|e| e.event_id);
        Ok(ours.then(|| stored.last().map(|e| e.position)).flatten())
    }

    /// Read-after-write, now or (for a batch item) left to the batch.
    async fn after_write(&self, position: LogPosition, written: &[Written<'_>]) {
        match &self.deferred {
            Some(deferred) => deferred.reached(position),
            None => self.wait_for_read_models(position, written).await,
        }
    }

    /// Read-after-write: hold the answer until the read models that consume
    /// what was `written` have it (a campaign write does not wait for the
    /// leads projection). Bounded: if they are far behind (or down) the write
    /// still succeeded, so it is answered anyway, counted and logged.
    pub(crate) async fn wait_for_read_models(&self, position: LogPosition, written: &[Written<'_>]) {
        self.wait_for_read_models_within(position, written, self.state.read_after_write_timeout)
            .await
    }

    /// [`Writer::wait_for_read_models`] with a bound of the caller's choosing.
    pub(crate) async fn wait_for_read_models_within(
        &self,
        position: LogPosition,
        written: &[Written<'_>],
        timeout: std::time::Duration,
    ) {
        let started = std::time::Instant::now();
        let reached = self
            .state
            .progress
            .wait_for_writes(position, Some(written), timeout)
            .await;
        metrics::histogram!("marketing_read_after_write_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        if !reached {
            metrics::counter!("marketing_read_after_write_timeouts_total").increment(1);
            tracing::warn!(
                ?position,
                "read models did not catch up before the write answered"
            );
            // The guarantee is already lost: waiting for a replica to copy
            // read models that lack the write would only add to the bound.
            return;
        }
        if let Some(replica) = &self.state.replica {
            wait_for_replica(&self.state.pool, replica).await;
        }
    }
}

/// Read-after-write through a replica: the read models have the write on the
/// primary; hold the answer until the replica has replayed that far too, for
/// at most the replica lag limit (after which reads no longer use a replica
/// that lacks it: `web::replica`).
async fn wait_for_replica(primary: &deadpool_postgres::Pool, replica: &web::replica::Replica) {
    let started = std::time::Instant::now();
    let replayed = match web::replica::Replica::primary_position(primary).await {
        Ok(target) => replica.wait_replayed(target).await,
        Err(error) => {
            // The primary failed just after the write (which is durable):
            // answer it, counted as a wait that did not reach the replica.
            tracing::warn!(%error, "cannot read the primary's WAL position");
            false
        }
    };
    metrics::histogram!("marketing_read_replica_wait_seconds").record(started.elapsed().as_secs_f64());
    if !replayed {
        metrics::counter!("marketing_read_replica_wait_timeouts_total").increment(1);
    }
}

enum Appended<A> {
    Done(Root<A>, LogPosition),
    /// Every event was already stored: a retried request.
    Stored(LogPosition),
    Conflict,
}

enum AppendFailure {
    Store(AppendError),
    Hook(ApiError),
}

fn hook_error(error: impl Into<ApiError>) -> AppendFailure {
    AppendFailure::Hook(error.into())
}

/// Folds an aggregate's stream.
pub(crate) async fn load_root<A: Resource>(
    state: &CommandState,
    id: Uuid,
    context: &A::Context,
) -> Result<Root<A>, ApiError> {
    let mut root = Root::default();
    for recorded in state.store.read_stream(&A::stream_id(id)).await? {
        let event = A::Event::from_data(
            &recorded.event_type,
            std::sync::Arc::unwrap_or_clone(recorded.data),
        )
        .map_err(ApiError::internal)?;
        root.fold(&event, recorded.recorded_at, recorded.version, context)
            .map_err(A::fold_error)?;
    }
    Ok(root)
}

fn stale<A: Aggregate>() -> ApiError {
    ApiError::PreconditionFailed(format!(
        "The {} has changed since the version in If-Match",
        A::KIND
    ))
}

/// The answer to a write: the resource with its ETag, and a `Location` when
/// it was just created.
pub(crate) fn respond<A: Resource>(status: StatusCode, root: &Root<A>) -> Result<Response, ApiError> {
    let resource = root.live_or(ApiError::NotFound(A::NOT_FOUND))?;
    let body = serde_json::to_vec(resource).map_err(ApiError::internal)?;
    let mut response = (status, [(CONTENT_TYPE, "application/json")], body).into_response();
    let headers = response.headers_mut();
    if let Some(version) = resource.etag() {
        headers.insert(ETAG, etag(version).parse().expect("valid etag"));
    }
    if status == StatusCode::CREATED {
        let location = resource.location().parse().map_err(ApiError::internal)?;
        headers.insert(LOCATION, location);
    }
    Ok(response)
}
