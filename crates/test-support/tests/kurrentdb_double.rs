//! The sanctioned test double of the KurrentDB gRPC API, driven by the real
//! `kurrentdb` client: the protocol the event store's backend relies on.

use kurrentdb::{
    AppendToStreamOptions, Client, CurrentRevision, Error, EventData, Position, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToAllOptions, SubscriptionEvent,
    SubscriptionFilter,
};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use test_support::kurrentdb::KurrentDbDouble;

fn client(url: &str) -> Client {
    Client::new(url.parse().expect("connection string")).expect("client")
}

fn event(n: u64) -> EventData {
    EventData::json("Thing", &json!({ "n": n }))
        .unwrap()
        .id(uuid::Uuid::new_v4())
}

async fn append(client: &Client, stream: &str, events: Vec<EventData>) -> kurrentdb::WriteResult {
    client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await
        .unwrap()
}

/// The next subscription message, with a deadline (a broken double would
/// otherwise hang the test).
async fn next(subscription: &mut kurrentdb::Subscription) -> SubscriptionEvent {
    tokio::time::timeout(Duration::from_secs(30), subscription.next_subscription_event())
        .await
        .expect("a subscription message in time")
        .expect("the subscription stays up")
}

fn n_of(event: &SubscriptionEvent) -> Option<u64> {
    match event {
        SubscriptionEvent::EventAppeared(e) => {
            e.get_original_event().as_json::<serde_json::Value>().unwrap()["n"].as_u64()
        }
        _ => None,
    }
}

#[tokio::test]
async fn expected_revisions_and_wrong_expected_versions() {
    let double = KurrentDbDouble::start().await;
    let client = client(&double.url());
    let no_stream = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let first = client
        .append_to_stream("s", &no_stream, vec![event(0), event(1)])
        .await
        .unwrap();
    assert_eq!(first.next_expected_version, 1);
    let err = client
        .append_to_stream("s", &no_stream, event(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                current: CurrentRevision::Current(1),
                expected: StreamState::NoStream
            }
        ),
        "{err:?}"
    );
    let exists = AppendToStreamOptions::default().stream_state(StreamState::StreamExists);
    let err = client
        .append_to_stream("missing", &exists, event(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                current: CurrentRevision::NoStream,
                ..
            }
        ),
        "{err:?}"
    );
    let at_one = AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(1));
    let second = client.append_to_stream("s", &at_one, event(2)).await.unwrap();
    assert_eq!(second.next_expected_version, 2);
    // The same ids right after the same expected revision: written once.
    let retried = vec![event(3)];
    let at_two = AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(2));
    let once = client
        .append_to_stream("s", &at_two, retried.clone())
        .await
        .unwrap();
    let twice = client.append_to_stream("s", &at_two, retried).await.unwrap();
    assert_eq!(
        (once.next_expected_version, once.position),
        (twice.next_expected_version, twice.position)
    );
    let mut read = client
        .read_stream("s", &ReadStreamOptions::default())
        .await
        .unwrap();
    let mut revisions = Vec::new();
    while let Some(e) = read.next().await.unwrap() {
        revisions.push(e.get_original_event().revision);
    }
    assert_eq!(revisions, vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn reads_of_streams_and_all_from_inclusive_positions() {
    let double = KurrentDbDouble::start().await;
    let client = client(&double.url());
    let mut missing = client
        .read_stream("nothing", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(matches!(missing.next().await, Err(Error::ResourceNotFound)));
    append(&client, "a", vec![event(0), event(1)]).await;
    append(&client, "b", vec![event(2)]).await;
    let from_one = ReadStreamOptions::default().position(StreamPosition::Position(1));
    let mut read = client.read_stream("a", &from_one).await.unwrap();
    assert_eq!(
        read.next().await.unwrap().unwrap().get_original_event().revision,
        1
    );
    assert!(read.next().await.unwrap().is_none());

    let mut all = client.read_all(&ReadAllOptions::default()).await.unwrap();
    let mut positions = Vec::new();
    while let Some(e) = all.next().await.unwrap() {
        positions.push(e.get_original_event().position);
    }
    assert_eq!(positions.len(), 3);
    // One append's events share the commit position, with prepares before it.
    assert_eq!(positions[0].commit, positions[1].commit);
    assert!(positions[0].prepare < positions[1].prepare && positions[1].prepare < positions[1].commit);
    assert!(positions[2].commit > positions[1].commit);
    let from = ReadAllOptions::default().position(StreamPosition::Position(positions[1]));
    let mut all = client.read_all(&from).await.unwrap();
    assert_eq!(
        all.next().await.unwrap().unwrap().get_original_event().position,
        positions[1]
    );
    let last = ReadAllOptions::default()
        .backwards()
        .position(StreamPosition::End)
        .max_count(1);
    let mut all = client.read_all(&last).await.unwrap();
    assert_eq!(
        all.next().await.unwrap().unwrap().get_original_event().position,
        positions[2]
    );
    assert!(all.next().await.unwrap().is_none());
}

#[tokio::test]
async fn a_subscription_confirms_catches_up_says_so_then_goes_live() {
    let double = KurrentDbDouble::start().await;
    let client = client(&double.url());
    append(&client, "a", vec![event(0), event(1)]).await;
    let second = append(&client, "b", vec![event(2)]).await;
    let mut subscription = client.subscribe_to_all(&SubscribeToAllOptions::default()).await;
    assert!(matches!(
        next(&mut subscription).await,
        SubscriptionEvent::Confirmed(_)
    ));
    for n in 0..3 {
        assert_eq!(n_of(&next(&mut subscription).await), Some(n));
    }
    match next(&mut subscription).await {
        SubscriptionEvent::CaughtUp(Some(caught_up)) => assert_eq!(caught_up.position, Some(second.position)),
        other => panic!("expected caught up, got {other:?}"),
    }
    append(&client, "a", vec![event(3)]).await;
    assert_eq!(n_of(&next(&mut subscription).await), Some(3));

    // From a position, a subscription starts after it (a subscriber resumes
    // from the last event it processed).
    let from = SubscribeToAllOptions::default().position(StreamPosition::Position(second.position));
    let mut resumed = client.subscribe_to_all(&from).await;
    assert!(matches!(
        next(&mut resumed).await,
        SubscriptionEvent::Confirmed(_)
    ));
    assert_eq!(n_of(&next(&mut resumed).await), Some(3));
    assert!(matches!(next(&mut resumed).await, SubscriptionEvent::CaughtUp(_)));
}

#[tokio::test]
async fn a_filtered_subscription_sends_matching_events_and_checkpoints() {
    let double = KurrentDbDouble::start().await;
    let client = client(&double.url());
    for n in 0..6 {
        let stream = if n % 2 == 0 { "keep-1" } else { "skip-1" };
        append(&client, stream, vec![event(n)]).await;
    }
    let filter = SubscriptionFilter::on_stream_name().add_prefix("keep-").max(2);
    let options = SubscribeToAllOptions::default().filter(filter);
    let mut subscription = client.subscribe_to_all(&options).await;
    assert!(matches!(
        next(&mut subscription).await,
        SubscriptionEvent::Confirmed(_)
    ));
    let mut events = Vec::new();
    let mut checkpoints: Vec<Position> = Vec::new();
    loop {
        match next(&mut subscription).await {
            SubscriptionEvent::CaughtUp(_) => break,
            SubscriptionEvent::Checkpoint(position) => checkpoints.push(position),
            other => events.push(n_of(&other).expect("an event")),
        }
    }
    assert_eq!(events, vec![0, 2, 4]);
    // Every second event read (window 2, multiplier 1), matching or not.
    assert_eq!(checkpoints.len(), 3);
    assert!(checkpoints.windows(2).all(|w| w[0].commit < w[1].commit));
    // Regular expressions are refused, not silently ignored.
    let regex = SubscribeToAllOptions::default().filter(SubscriptionFilter::on_stream_name().regex("^k"));
    let mut refused = client.subscribe_to_all(&regex).await;
    assert!(refused.next_subscription_event().await.is_err());
}

#[test]
fn the_binary_serves_until_killed() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kurrentdb-double"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start kurrentdb-double");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix('(').and_then(|w| w.strip_suffix(')')))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = client(&url);
        let written = append(&client, "s", vec![event(0)]).await;
        assert_eq!(written.next_expected_version, 0);
    });
    assert!(child.try_wait().unwrap().is_none(), "still serving");
    child.kill().unwrap();
    child.wait().unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_kurrentdb-double"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("usage"));
}
