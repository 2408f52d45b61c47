//! The key cache against a real Postgres, its polls stepped by hand: what it
//! serves before and after a poll that saw a change, whoever made the change.
//! No timing: where a check needs the cache to be trusted (a poll confirmed it
//! less than the trust window ago), it polls again until it is, so a paused
//! machine only makes the test slower.

use domain::ProjectSlug;
use std::time::{Duration, Instant};
use test_support::{fresh_database, TestDatabase};
use web::ApiKeys;

async fn migrated() -> TestDatabase {
    let db = fresh_database().await;
    web::migrate(&mut db.connect().await).await.unwrap();
    db
}

fn keys(db: &TestDatabase, cached: bool) -> ApiKeys {
    let pool = event_store::connect_pool(&db.url, 2).unwrap();
    if cached {
        ApiKeys::cached(pool)
    } else {
        ApiKeys::new(pool)
    }
}

/// Polls and looks `secret` up until the cache serves it.
async fn until_cached(keys: &ApiKeys, secret: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        keys.poll_cache().await.unwrap();
        assert!(keys.authenticate(secret).await.unwrap().is_some(), "live key");
        if keys.serves_from_cache(secret) {
            return;
        }
        assert!(Instant::now() < deadline, "the key never came from the cache");
    }
}

#[tokio::test]
async fn after_a_poll_that_saw_a_change_made_elsewhere_the_key_is_refused() {
    let db = migrated().await;
    let serving = keys(&db, true);
    let elsewhere = keys(&db, false);
    let project = ProjectSlug::parse("acme").unwrap();
    let (info, secret) = elsewhere.create(&project, "shared").await.unwrap();

    assert!(serving.authenticate(&secret).await.unwrap().is_some());
    assert!(
        !serving.serves_from_cache(&secret),
        "never polled: nothing is served from the cache"
    );
    until_cached(&serving, &secret).await;
    let caller = serving.authenticate(&secret).await.unwrap().unwrap();
    assert_eq!((caller.key_id, caller.project.as_str()), (info.id, "acme"));

    assert!(elsewhere.revoke(info.id).await.unwrap());
    serving.poll_cache().await.unwrap();
    assert!(!serving.serves_from_cache(&secret));
    assert!(serving.authenticate(&secret).await.unwrap().is_none());

    // Plain SQL moves the generation as well: a deleted key is refused too.
    let (info, secret) = elsewhere.create(&project, "deleted").await.unwrap();
    until_cached(&serving, &secret).await;
    db.connect()
        .await
        .execute("DELETE FROM api_keys WHERE id = $1", &[&info.id])
        .await
        .unwrap();
    serving.poll_cache().await.unwrap();
    assert!(serving.authenticate(&secret).await.unwrap().is_none());
}

#[tokio::test]
async fn the_revoking_process_refuses_at_once_and_other_keys_stay_cached() {
    let db = migrated().await;
    let serving = keys(&db, true);
    let project = ProjectSlug::parse("acme").unwrap();
    let (revoked, revoked_secret) = serving.create(&project, "revoked").await.unwrap();
    let (_, kept_secret) = serving.create(&project, "kept").await.unwrap();
    until_cached(&serving, &revoked_secret).await;

    assert!(serving.revoke(revoked.id).await.unwrap());
    // No poll in between.
    assert!(!serving.serves_from_cache(&revoked_secret));
    assert!(serving.authenticate(&revoked_secret).await.unwrap().is_none());
    until_cached(&serving, &kept_secret).await;
    assert!(
        serving.authenticate(&revoked_secret).await.unwrap().is_none(),
        "a revoked key is never cached"
    );
}

/// Expiry needs no poll: a cached entry stops working at its expiry, by the
/// clock, while the cache still holds it.
#[tokio::test]
async fn a_cached_key_stops_working_at_its_expiry() {
    let db = migrated().await;
    let serving = keys(&db, true);
    let project = ProjectSlug::parse("acme").unwrap();
    let (_, secret) = serving
        .create_scoped(
            &project,
            "brief",
            web::Scopes::all(),
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let expired = Instant::now() + Duration::from_secs(1) + Duration::from_millis(50);
    serving.poll_cache().await.unwrap();
    // Whether or not it is still live now, the lookup caches it.
    let _ = serving.authenticate(&secret).await.unwrap();
    // The scenario: its lifetime passes; polls keep the cache trusted.
    tokio::time::sleep_until(expired.into()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        serving.poll_cache().await.unwrap();
        let _ = serving.authenticate(&secret).await.unwrap();
        if serving.serves_from_cache(&secret) {
            break;
        }
        assert!(Instant::now() < deadline, "the key never came from the cache");
    }
    assert!(serving.authenticate(&secret).await.unwrap().is_none());
    assert!(
        serving.serves_from_cache(&secret),
        "refused by the clock, not by a poll"
    );
}
