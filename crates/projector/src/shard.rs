//! Shards of a projection: its events divided by campaign, so that one
//! campaign's import is projected beside, not in front of, everyone else's
//! writes, and so that several processes can share the work.
//!
//! Every event belongs to the shard of its campaign (a campaign's own events,
//! and those of its tasks, content, leads and analytics), so a campaign and
//! its children are always in one shard, and a `CampaignDeleted` reaches the
//! same shard as the rows it hides. Each shard is a reader of its own on the
//! log follower: its own checkpoint row, committed with its rows, and its own
//! advisory lock. Each reads the projection's streams and applies only its
//! own events.
//!
//! The shard of a campaign is its id modulo the shard count: stable, known to
//! a writer without a lookup, and uniform for random (v4) and time-ordered
//! (v7) ids alike, whose low bits are random.

use event_store::RecordedEvent;
use uuid::Uuid;

/// One of `count` shards of a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The most shards a projection may have: each is a reader with its own
/// checkpoint and lock, and a write that cannot name its campaign waits for
/// every one of them.
pub const MAX_SHARDS: u32 = 64;

impl Shard {
    /// The one shard of an unsharded projection.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Every shard of a projection split `count` ways.
    pub fn all(count: u32) -> impl Iterator<Item = Shard> {
        let count = count.clamp(1, MAX_SHARDS);
        (0..count).map(move |index| Shard { index, count })
    }

    /// The shard, of `count`, that holds `campaign_id`'s events.
    pub fn of(campaign_id: Uuid, count: u32) -> Shard {
        let count = count.clamp(1, MAX_SHARDS);
        Shard {
            index: (campaign_id.as_u128() % u128::from(count)) as u32,
            count,
        }
    }

    /// Whether this shard holds the events of `campaign_id`.
    pub fn holds(&self, campaign_id: Uuid) -> bool {
        Shard::of(campaign_id, self.count) == *self
    }

    /// Whether this shard applies `event`. An event that names no campaign
    /// (none does today) goes to shard 0, so that it is applied exactly once.
    pub fn holds_event(&self, event: &RecordedEvent) -> bool {
        if self.count == 1 {
            return true;
        }
        campaign_of(event).map_or(self.index == 0, |campaign| self.holds(campaign))
    }

    /// The reader name of this shard of `projection`: its checkpoint row and
    /// lock key. An unsharded projection keeps its plain name, so its
    /// checkpoint and lock are those of earlier versions.
    pub fn reader_name(&self, projection: &str) -> String {
        if self.count == 1 {
            projection.to_owned()
        } else {
            format!("{projection}:{}/{}", self.index, self.count)
        }
    }
}

/// The campaign an event belongs to: the stream's own id for a campaign's
/// events, else the `campaign_id` its metadata carries (every event appended
/// since the write kernel does), else the one in its data (every child
/// resource's events have one, which covers events stored before).
pub fn campaign_of(event: &RecordedEvent) -> Option<Uuid> {
    if let Some(id) = event.stream_id.strip_prefix(domain::campaign::STREAM_PREFIX) {
        return id.parse().ok();
    }
    [&event.metadata, &event.data]
        .into_iter()
        .find_map(|value| value.get("campaign_id")?.as_str()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every campaign is in exactly one shard, whatever the count.
        #[test]
        fn every_campaign_is_in_exactly_one_shard(id: u128, count in 1u32..=MAX_SHARDS) {
            let id = Uuid::from_u128(id);
            let holding = Shard::all(count).filter(|s| s.holds(id)).count();
            prop_assert_eq!(holding, 1);
            prop_assert!(Shard::of(id, count).index < count);
        }
    }

    #[test]
    fn unsharded_projections_keep_their_names() {
        assert_eq!(Shard::WHOLE.reader_name("leads"), "leads");
        assert_eq!(Shard { index: 2, count: 4 }.reader_name("leads"), "leads:2/4");
    }

    #[test]
    fn a_campaigns_children_follow_it() {
        let campaign = Uuid::now_v7();
        let event = |stream_id: String, data: serde_json::Value, metadata: serde_json::Value| RecordedEvent {
            position: event_store::LogPosition::START,
            event_id: Uuid::now_v7(),
            stream_id,
            version: 0,
            event_type: "X".into(),
            schema_version: 1,
            data: data.into(),
            metadata: metadata.into(),
            recorded_at: chrono::Utc::now(),
        };
        let of_campaign = event(
            domain::campaign::stream_id(campaign),
            serde_json::json!({}),
            serde_json::json!({}),
        );
        let by_data = event(
            domain::task::stream_id(Uuid::now_v7()),
            serde_json::json!({ "campaign_id": campaign }),
            serde_json::Value::Null,
        );
        let by_metadata = event(
            domain::lead::stream_id(Uuid::now_v7()),
            serde_json::Value::Null,
            serde_json::json!({ "campaign_id": campaign }),
        );
        for e in [&of_campaign, &by_data, &by_metadata] {
            assert_eq!(campaign_of(e), Some(campaign));
        }
        let shard = Shard::of(campaign, 4);
        assert!(Shard::all(4).all(|s| s.holds_event(&by_data) == (s == shard)));
    }
}
