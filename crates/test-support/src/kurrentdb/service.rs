//! The `Streams` gRPC service of the double: `Append`, and `Read` of one stream,
//! of `$all`, and of a subscription to `$all`. Every reply carries the fields the
//! `kurrentdb` client unwraps (it panics on a missing one), and a subscription
//! never sends "stream not found" (the client treats it as unreachable).

// `tonic::Status` is the error type of the generated service trait; helpers
// return it as it is rather than boxing it for each reply.
#![allow(clippy::result_large_err)]

use super::log::{Appended, Expected, Proposed, Shared, Stored};
use super::proto::event_store::client::streams::{
    append_req, append_resp, read_req, read_resp, streams_server, AppendReq, AppendResp, BatchAppendReq,
    BatchAppendResp, DeleteReq, DeleteResp, ReadReq, ReadResp, TombstoneReq, TombstoneResp,
};
use super::proto::event_store::client::{uuid as wire_uuid, Empty, StreamIdentifier, Uuid as WireUuid};
use futures::{Stream, StreamExt};
use prost::bytes::Bytes;
use read_req::options::{self as read_options, CountOption, FilterOption, ReadDirection, StreamOption};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

type Replies = Pin<Box<dyn Stream<Item = Result<ReadResp, Status>> + Send>>;

/// How many events a subscription sends between two reads of the log.
const SUBSCRIPTION_BATCH: usize = 256;
/// The checkpoint interval of a filtered subscription whose window is
/// "count" (the client's default): checkpoints every this many events read.
const DEFAULT_CHECKPOINT_INTERVAL: u64 = 32;

pub struct StreamsService {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl streams_server::Streams for StreamsService {
    type ReadStream = Replies;
    type BatchAppendStream = Pin<Box<dyn Stream<Item = Result<BatchAppendResp, Status>> + Send>>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Replies>, Status> {
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("ReadReq.options is required"))?;
        let ids = IdFormat::of(&options);
        let filter = Filter::of(&options)?;
        let replies = match (options.stream_option, options.count_option) {
            (Some(StreamOption::Stream(stream)), Some(CountOption::Count(count))) => {
                self.read_stream(stream, options.read_direction, count, ids)?
            }
            (Some(StreamOption::All(all)), Some(CountOption::Count(count))) => {
                self.read_all(all, options.read_direction, count, &filter, ids)?
            }
            (Some(StreamOption::All(all)), Some(CountOption::Subscription(_))) => {
                self.subscribe_to_all(all, filter, ids)?
            }
            (Some(StreamOption::Stream(_)), Some(CountOption::Subscription(_))) => {
                return Err(Status::unimplemented(
                    "the KurrentDB test double serves subscriptions to $all only",
                ))
            }
            _ => {
                return Err(Status::invalid_argument(
                    "ReadReq needs a stream option and a count option",
                ))
            }
        };
        Ok(Response::new(replies))
    }

    async fn append(&self, request: Request<Streaming<AppendReq>>) -> Result<Response<AppendResp>, Status> {
        let mut messages = request.into_inner();
        let options = match messages.next().await.transpose()?.and_then(|m| m.content) {
            Some(append_req::Content::Options(options)) => options,
            _ => return Err(Status::invalid_argument("an append starts with its options")),
        };
        let stream = stream_name(options.stream_identifier)?;
        let expected = match options.expected_stream_revision {
            Some(append_req::options::ExpectedStreamRevision::Revision(r)) => Expected::Revision(r),
            Some(append_req::options::ExpectedStreamRevision::NoStream(_)) => Expected::NoStream,
            Some(append_req::options::ExpectedStreamRevision::StreamExists(_)) => Expected::StreamExists,
            Some(append_req::options::ExpectedStreamRevision::Any(_)) => Expected::Any,
            None => return Err(Status::invalid_argument("the expected revision is required")),
        };
        let mut proposed = Vec::new();
        while let Some(message) = messages.next().await.transpose()? {
            match message.content {
                Some(append_req::Content::ProposedMessage(event)) => proposed.push(Proposed {
                    id: event_id(event.id)?,
                    metadata: event.metadata,
                    custom_metadata: event.custom_metadata,
                    data: event.data,
                }),
                _ => return Err(Status::invalid_argument("only events may follow the options")),
            }
        }
        let outcome = self.shared.append(stream, expected, proposed);
        Ok(Response::new(append_reply(outcome, expected)))
    }

    async fn delete(&self, _: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        Err(Status::unimplemented(
            "the KurrentDB test double does not delete streams",
        ))
    }

    async fn tombstone(&self, _: Request<TombstoneReq>) -> Result<Response<TombstoneResp>, Status> {
        Err(Status::unimplemented(
            "the KurrentDB test double does not tombstone streams",
        ))
    }

    async fn batch_append(
        &self,
        _: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        Err(Status::unimplemented(
            "the KurrentDB test double serves Append, not BatchAppend",
        ))
    }
}

impl StreamsService {
    fn read_stream(
        &self,
        options: read_options::StreamOptions,
        direction: i32,
        count: u64,
        ids: IdFormat,
    ) -> Result<Replies, Status> {
        let stream = stream_name(options.stream_identifier)?;
        let Some(events) = self.shared.lock().stream(&stream) else {
            let not_found = read_resp::Content::StreamNotFound(read_resp::StreamNotFound {
                stream_identifier: Some(StreamIdentifier { stream_name: stream }),
            });
            return Ok(replies(vec![not_found]));
        };
        use read_options::stream_options::RevisionOption;
        let backwards = direction == ReadDirection::Backwards as i32;
        let selected: Vec<&Arc<Stored>> = match (options.revision_option, backwards) {
            (Some(RevisionOption::Start(_)), false) => events.iter().collect(),
            (Some(RevisionOption::Revision(r)), false) => events.iter().filter(|e| e.revision >= r).collect(),
            (Some(RevisionOption::End(_)), false) => Vec::new(),
            (Some(RevisionOption::End(_)), true) => events.iter().rev().collect(),
            (Some(RevisionOption::Revision(r)), true) => {
                events.iter().rev().filter(|e| e.revision <= r).collect()
            }
            (Some(RevisionOption::Start(_)), true) => events.iter().take(1).collect(),
            (None, _) => return Err(Status::invalid_argument("a stream read needs a revision option")),
        };
        let limit = usize::try_from(count).unwrap_or(usize::MAX);
        Ok(replies(
            selected
                .into_iter()
                .take(limit)
                .map(|e| event_reply(e, ids))
                .collect(),
        ))
    }

    /// Forwards from a position includes the event at it; backwards from a
    /// position starts before it.
    fn read_all(
        &self,
        options: read_options::AllOptions,
        direction: i32,
        count: u64,
        filter: &Filter,
        ids: IdFormat,
    ) -> Result<Replies, Status> {
        use read_options::all_options::AllOption;
        let log = self.shared.lock();
        let backwards = direction == ReadDirection::Backwards as i32;
        let range: Box<dyn Iterator<Item = &Arc<Stored>>> = match (options.all_option, backwards) {
            (Some(AllOption::Start(_)), false) => Box::new(log.events.iter()),
            (Some(AllOption::Position(p)), false) => {
                Box::new(log.events[log.index_at_or_after((p.commit_position, p.prepare_position))..].iter())
            }
            (Some(AllOption::End(_)), false) | (Some(AllOption::Start(_)), true) => {
                Box::new(std::iter::empty())
            }
            (Some(AllOption::End(_)), true) => Box::new(log.events.iter().rev()),
            (Some(AllOption::Position(p)), true) => Box::new(
                log.events[..log.index_at_or_after((p.commit_position, p.prepare_position))]
                    .iter()
                    .rev(),
            ),
            (None, _) => return Err(Status::invalid_argument("a $all read needs a position option")),
        };
        let limit = usize::try_from(count).unwrap_or(usize::MAX);
        let selected: Vec<_> = range
            .filter(|e| filter.matches(e))
            .take(limit)
            .map(|e| event_reply(e, ids))
            .collect();
        Ok(replies(selected))
    }

    /// Confirmation, then every event after the start (exclusive, as the real
    /// server: a subscriber resumes from the last position it processed), then
    /// "caught up" once it reached the end of the log, then live events as they
    /// are appended. A filtered subscription also sends checkpoints.
    fn subscribe_to_all(
        &self,
        options: read_options::AllOptions,
        filter: Filter,
        ids: IdFormat,
    ) -> Result<Replies, Status> {
        use read_options::all_options::AllOption;
        let start = {
            let log = self.shared.lock();
            match options.all_option {
                Some(AllOption::Start(_)) => 0,
                Some(AllOption::End(_)) => log.events.len(),
                Some(AllOption::Position(p)) => log.index_after((p.commit_position, p.prepare_position)),
                None => return Err(Status::invalid_argument("a subscription needs a position option")),
            }
        };
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BATCH);
        tokio::spawn(
            Subscription {
                shared: Arc::clone(&self.shared),
                next: start,
                filter,
                ids,
                sender,
            }
            .run(),
        );
        Ok(Box::pin(futures::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|reply| (Ok(reply), receiver)) },
        )))
    }
}

struct Subscription {
    shared: Arc<Shared>,
    next: usize,
    filter: Filter,
    ids: IdFormat,
    sender: mpsc::Sender<ReadResp>,
}

impl Subscription {
    async fn run(mut self) {
        let confirmation = read_resp::Content::Confirmation(read_resp::SubscriptionConfirmation {
            subscription_id: Uuid::new_v4().to_string(),
        });
        if !self.send(confirmation).await {
            return;
        }
        let mut appended = self.shared.appended.subscribe();
        let mut caught_up = false;
        let mut since_checkpoint = 0;
        loop {
            // Marked seen before reading, so an append after the read wakes us.
            appended.borrow_and_update();
            let batch: Vec<Arc<Stored>> = {
                let log = self.shared.lock();
                let end = log.events.len().min(self.next + SUBSCRIPTION_BATCH);
                log.events[self.next.min(end)..end].to_vec()
            };
            if batch.is_empty() {
                if !caught_up {
                    caught_up = true;
                    if !self.send(self.caught_up()).await {
                        return;
                    }
                }
                tokio::select! {
                    changed = appended.changed() => if changed.is_err() { return },
                    _ = self.sender.closed() => return,
                }
                continue;
            }
            for event in batch {
                self.next += 1;
                since_checkpoint += 1;
                if self.filter.matches(&event) && !self.send(event_reply(&event, self.ids)).await {
                    return;
                }
                if self
                    .filter
                    .checkpoint_every
                    .is_some_and(|every| since_checkpoint >= every)
                {
                    since_checkpoint = 0;
                    let checkpoint = read_resp::Content::Checkpoint(read_resp::Checkpoint {
                        commit_position: event.commit,
                        prepare_position: event.prepare,
                        timestamp: Some(now()),
                    });
                    if !self.send(checkpoint).await {
                        return;
                    }
                }
            }
        }
    }

    fn caught_up(&self) -> read_resp::Content {
        let last = self
            .next
            .checked_sub(1)
            .and_then(|i| self.shared.lock().events.get(i).cloned());
        read_resp::Content::CaughtUp(read_resp::CaughtUp {
            timestamp: Some(now()),
            stream_revision: None,
            position: last.map(|e| read_resp::Position {
                commit_position: e.commit,
                prepare_position: e.prepare,
            }),
        })
    }

    /// False once the client has gone.
    async fn send(&self, content: read_resp::Content) -> bool {
        self.sender
            .send(ReadResp {
                content: Some(content),
            })
            .await
            .is_ok()
    }
}

/// The server-side filter of a `$all` read or subscription: prefixes of stream
/// names or of event types. Regular expressions are refused (the double has
/// no regex engine): the event store's backend filters by prefix only.
struct Filter {
    on_stream: bool,
    prefixes: Vec<String>,
    /// Checkpoints of a subscription: every this many events read.
    checkpoint_every: Option<u64>,
}

impl Filter {
    fn of(options: &read_req::Options) -> Result<Filter, Status> {
        use read_options::filter_options::{self, Window};
        let Some(FilterOption::Filter(filter)) = &options.filter_option else {
            return Ok(Filter {
                on_stream: true,
                prefixes: Vec::new(),
                checkpoint_every: None,
            });
        };
        let (on_stream, expression) = match &filter.filter {
            Some(filter_options::Filter::StreamIdentifier(e)) => (true, e),
            Some(filter_options::Filter::EventType(e)) => (false, e),
            None => return Err(Status::invalid_argument("a filter needs an expression")),
        };
        if !expression.regex.is_empty() {
            return Err(Status::invalid_argument(
                "the KurrentDB test double filters by prefix only, not by regular expression",
            ));
        }
        let window = match filter.window {
            Some(Window::Max(max)) => u64::from(max.max(1)),
            _ => DEFAULT_CHECKPOINT_INTERVAL,
        };
        Ok(Filter {
            on_stream,
            prefixes: expression.prefix.clone(),
            checkpoint_every: Some(window * u64::from(filter.checkpoint_interval_multiplier.max(1))),
        })
    }

    fn matches(&self, event: &Stored) -> bool {
        if self.prefixes.is_empty() {
            return true;
        }
        let subject: &[u8] = if self.on_stream {
            &event.stream
        } else {
            event.metadata.get("type").map_or(&[][..], |t| t.as_bytes())
        };
        self.prefixes.iter().any(|p| subject.starts_with(p.as_bytes()))
    }
}

/// How the client asked to see event ids.
#[derive(Clone, Copy)]
enum IdFormat {
    Structured,
    String,
}

impl IdFormat {
    fn of(options: &read_req::Options) -> IdFormat {
        match options.uuid_option.as_ref().and_then(|o| o.content.as_ref()) {
            Some(read_options::uuid_option::Content::String(_)) => IdFormat::String,
            _ => IdFormat::Structured,
        }
    }

    fn encode(self, id: Uuid) -> WireUuid {
        let value = match self {
            IdFormat::String => wire_uuid::Value::String(id.to_string()),
            IdFormat::Structured => {
                let (high, low) = id.as_u64_pair();
                wire_uuid::Value::Structured(wire_uuid::Structured {
                    most_significant_bits: high as i64,
                    least_significant_bits: low as i64,
                })
            }
        };
        WireUuid { value: Some(value) }
    }
}

fn event_id(id: Option<WireUuid>) -> Result<Uuid, Status> {
    match id.and_then(|id| id.value) {
        Some(wire_uuid::Value::Structured(s)) => Ok(Uuid::from_u64_pair(
            s.most_significant_bits as u64,
            s.least_significant_bits as u64,
        )),
        Some(wire_uuid::Value::String(s)) => s
            .parse()
            .map_err(|_| Status::invalid_argument(format!("invalid event id {s:?}"))),
        None => Err(Status::invalid_argument("every proposed event needs an id")),
    }
}

fn stream_name(identifier: Option<StreamIdentifier>) -> Result<Bytes, Status> {
    match identifier {
        Some(identifier) if !identifier.stream_name.is_empty() => Ok(identifier.stream_name),
        _ => Err(Status::invalid_argument("a stream name is required")),
    }
}

fn event_reply(event: &Stored, ids: IdFormat) -> read_resp::Content {
    use read_resp::read_event::{self, RecordedEvent};
    read_resp::Content::Event(read_resp::ReadEvent {
        event: Some(RecordedEvent {
            id: Some(ids.encode(event.id)),
            stream_identifier: Some(StreamIdentifier {
                stream_name: event.stream.clone(),
            }),
            stream_revision: event.revision,
            prepare_position: event.prepare,
            commit_position: event.commit,
            metadata: event.metadata.clone(),
            custom_metadata: event.custom_metadata.clone(),
            data: event.data.clone(),
        }),
        link: None,
        position: Some(read_event::Position::CommitPosition(event.commit)),
    })
}

fn replies(contents: Vec<read_resp::Content>) -> Replies {
    Box::pin(futures::stream::iter(contents.into_iter().map(|content| {
        Ok(ReadResp {
            content: Some(content),
        })
    })))
}

fn append_reply(outcome: Appended, expected: Expected) -> AppendResp {
    use append_resp::{success, wrong_expected_version as wrong};
    let result = match outcome {
        Appended::Written { revision, position } => append_resp::Result::Success(append_resp::Success {
            current_revision_option: Some(success::CurrentRevisionOption::CurrentRevision(revision)),
            position_option: Some(success::PositionOption::Position(append_resp::Position {
                commit_position: position.0,
                prepare_position: position.1,
            })),
        }),
        Appended::Nothing { current } => append_resp::Result::Success(append_resp::Success {
            current_revision_option: Some(match current {
                Some(revision) => success::CurrentRevisionOption::CurrentRevision(revision),
                None => success::CurrentRevisionOption::NoStream(Empty {}),
            }),
            position_option: Some(success::PositionOption::NoPosition(Empty {})),
        }),
        Appended::WrongExpectedVersion { current } => {
            append_resp::Result::WrongExpectedVersion(append_resp::WrongExpectedVersion {
                current_revision_option: Some(match current {
                    Some(revision) => wrong::CurrentRevisionOption::CurrentRevision(revision),
                    None => wrong::CurrentRevisionOption::CurrentNoStream(Empty {}),
                }),
                expected_revision_option: Some(match expected {
                    Expected::Revision(r) => wrong::ExpectedRevisionOption::ExpectedRevision(r),
                    Expected::Any => wrong::ExpectedRevisionOption::ExpectedAny(Empty {}),
                    Expected::StreamExists => wrong::ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
                    Expected::NoStream => wrong::ExpectedRevisionOption::ExpectedNoStream(Empty {}),
                }),
                ..Default::default()
            })
        }
    };
    AppendResp { result: Some(result) }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(std::time::SystemTime::now())
}
