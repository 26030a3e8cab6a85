//! The client against the emulator over real HTTP: writes survive injected faults exactly once,
//! and the client's own pacing keeps a read burst free of 429s at the emulator's real limits.
//!
//! Pacing runs at Klaviyo's limits in *shape* (1 s burst and 60 s steady fixed windows per
//! operation) but scaled where the published numbers would make the default test suite take
//! minutes: 2,000 reads at 750/min need about 2.7 minutes. Emulator and client are scaled by the
//! same factor, so both sides agree on every limit and a 429 would mean the client really sent
//! more than the server allows. One smaller test runs at the published numbers (factor 1.0).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use klsync::emulator::{self, EmulatorConfig, EmulatorHandle, RateLimitMode};
use klsync::klaviyo::{
    ApiError, ClientConfig, KlaviyoClient, OptInProcess, ProfileAttributes, SegmentUpdate,
};
use klsync::settings::Secret;
use serde_json::json;

const KEY: &str = "pk_client_emulator";
/// Requests in flight at once, as a busy `klsync apply` would have.
const IN_FLIGHT: usize = 8;

async fn start(rate_limits: RateLimitMode, faults: Option<&str>) -> EmulatorHandle {
    emulator::start(EmulatorConfig {
        rate_limits,
        faults: faults.map(str::to_string),
        seed: 20_261_128,
        api_keys: vec![KEY.into()],
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts")
}

fn client(handle: &EmulatorHandle, rate_limit_factor: Option<f64>) -> KlaviyoClient {
    let mut config = ClientConfig::new(handle.base_url.clone(), Secret::new(KEY));
    config.rate_limit_factor = rate_limit_factor;
    // 26 % of requests fail (20 % 429, 5 % 500, 1 % reset): ten attempts make giving up on one
    // request a one-in-a-million event, and a short backoff keeps the test fast.
    config.max_attempts = 10;
    config.backoff_base = Duration::from_millis(5);
    KlaviyoClient::new(config).expect("client")
}

/// What one write of the workload produced: the index of the resource and its id, if created.
enum Done {
    Group(usize, String),
    List(usize, String),
    Segment(usize, String),
    Tag(usize, String),
    Profile(usize, String),
    Changed,
}

type Write<'a> = BoxFuture<'a, Result<Done, ApiError>>;

/// Runs `writes` with [`IN_FLIGHT`] concurrency; returns the outcomes and the errors.
async fn run(writes: Vec<Write<'_>>, errors: &mut Vec<String>) -> Vec<Done> {
    let results: Vec<Result<Done, ApiError>> = futures::stream::iter(writes)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut done = Vec::new();
    for result in results {
        match result {
            Ok(d) => done.push(d),
            Err(e) => errors.push(e.to_string()),
        }
    }
    done
}

const GROUPS: usize = 20;
const LISTS: usize = 100;
const SEGMENTS: usize = 60;
const TAGS: usize = 100;
const PROFILES: usize = 200;
/// Lists that get members (profiles `3i..3i+3`), of which the first `REMOVALS` lose one.
const LISTS_WITH_MEMBERS: usize = 60;
const REMOVALS: usize = 20;
/// Tags `0..TAGGED_LISTS` are linked to the list of the same index, the next `TAGGED_SEGMENTS`
/// to segment `i - TAGGED_LISTS`.
const TAGGED_LISTS: usize = 40;
const TAGGED_SEGMENTS: usize = 20;

fn email(i: usize) -> String {
    format!("p{i}@example.com")
}

#[tokio::test]
async fn a_thousand_writes_under_faults_all_land_exactly_once() {
    // Rate limits are off in the emulator (its Off mode skips the daily caps too) and the client
    // does not pace: this test is about faults. The creates still stay within the daily caps
    // (100 of 150 lists, 60 of 100 segments) so the workload is one Klaviyo would accept.
    let handle = start(RateLimitMode::Off, Some("429=0.2,500=0.05,reset=0.01")).await;
    let client = client(&handle, None);
    let definition = json!({"condition_groups": [{"conditions": [{
        "type": "profile-property", "property": "properties['tier']",
        "filter": {"type": "string", "operator": "equals", "value": "gold"}}]}]});
    let started = Instant::now();
    let mut errors = Vec::new();
    let mut writes_sent = 0;

    // Phase 1: the resources everything else refers to.
    let mut phase: Vec<Write> = Vec::new();
    for i in 0..PROFILES {
        let c = &client;
        phase.push(
            async move {
                let attributes = ProfileAttributes {
                    email: Some(Some(email(i))),
                    first_name: Some(Some(format!("P{i}"))),
                    ..ProfileAttributes::default()
                };
                let up = c.upsert_profile(&attributes).await?;
                Ok(Done::Profile(i, up.profile.id))
            }
            .boxed(),
        );
        if i < GROUPS {
            phase.push(
                async move {
                    let g = c.create_tag_group(&format!("group-{i}"), false).await?;
                    Ok(Done::Group(i, g.id))
                }
                .boxed(),
            );
        }
        if i < LISTS {
            phase.push(
                async move {
                    let l = c
                        .create_list(&format!("list-{i}"), Some(OptInProcess::SingleOptIn))
                        .await?;
                    Ok(Done::List(i, l.id))
                }
                .boxed(),
            );
        }
        if i < SEGMENTS {
            let definition = &definition;
            phase.push(
                async move {
                    let s = c
                        .create_segment(&format!("segment-{i}"), definition, false)
                        .await?;
                    Ok(Done::Segment(i, s.id))
                }
                .boxed(),
            );
        }
    }
    writes_sent += phase.len();
    let mut ids: BTreeMap<&str, BTreeMap<usize, String>> = BTreeMap::new();
    let keep = |done: Vec<Done>, ids: &mut BTreeMap<&str, BTreeMap<usize, String>>| {
        for d in done {
            let (kind, i, id) = match d {
                Done::Group(i, id) => ("group", i, id),
                Done::List(i, id) => ("list", i, id),
                Done::Segment(i, id) => ("segment", i, id),
                Done::Tag(i, id) => ("tag", i, id),
                Done::Profile(i, id) => ("profile", i, id),
                Done::Changed => continue,
            };
            ids.entry(kind).or_default().insert(i, id);
        }
    };
    keep(run(phase, &mut errors).await, &mut ids);
    assert!(errors.is_empty(), "phase 1 failed: {errors:#?}");
    let id =
        |ids: &BTreeMap<&str, BTreeMap<usize, String>>, kind: &str, i: usize| ids[kind][&i].clone();

    // Phase 2: tags in the groups, and an update of everything phase 1 made.
    let mut phase: Vec<Write> = Vec::new();
    for i in 0..TAGS {
        let (c, group) = (&client, id(&ids, "group", i % GROUPS));
        phase.push(
            async move {
                let t = c.create_tag(&format!("tag-{i}"), Some(&group)).await?;
                Ok(Done::Tag(i, t.id))
            }
            .boxed(),
        );
        if i < PROFILES / 2 {
            phase.push(
                async move {
                    let attributes = ProfileAttributes {
                        email: Some(Some(email(i))),
                        title: Some(Some(format!("T{i}"))),
                        ..ProfileAttributes::default()
                    };
                    c.upsert_profile(&attributes).await.map(|_| Done::Changed)
                }
                .boxed(),
            );
        }
        if i < LISTS {
            let list = id(&ids, "list", i);
            phase.push(
                async move {
                    c.update_list(
                        &list,
                        Some(&format!("list-{i} renamed")),
                        Some(OptInProcess::DoubleOptIn),
                    )
                    .await
                    .map(|_| Done::Changed)
                }
                .boxed(),
            );
        }
        if i < SEGMENTS {
            let segment = id(&ids, "segment", i);
            phase.push(
                async move {
                    let update = SegmentUpdate {
                        name: Some(format!("segment-{i} renamed")),
                        is_starred: Some(true),
                        ..SegmentUpdate::default()
                    };
                    c.update_segment(&segment, &update)
                        .await
                        .map(|_| Done::Changed)
                }
                .boxed(),
            );
        }
        if i < GROUPS {
            let group = id(&ids, "group", i);
            phase.push(
                async move {
                    c.update_tag_group(&group, &format!("group-{i} renamed"))
                        .await
                        .map(|()| Done::Changed)
                }
                .boxed(),
            );
        }
    }
    writes_sent += phase.len();
    keep(run(phase, &mut errors).await, &mut ids);
    assert!(errors.is_empty(), "phase 2 failed: {errors:#?}");

    // Phase 3: tag renames, list members, tag links.
    let mut phase: Vec<Write> = Vec::new();
    for i in 0..TAGS {
        let (c, tag) = (&client, id(&ids, "tag", i));
        let rename_tag = tag.clone();
        phase.push(
            async move {
                c.update_tag(&rename_tag, &format!("tag-{i} renamed"))
                    .await
                    .map(|()| Done::Changed)
            }
            .boxed(),
        );
        if i < LISTS_WITH_MEMBERS {
            let list = id(&ids, "list", i);
            let members: Vec<String> = (3 * i..3 * i + 3).map(|p| id(&ids, "profile", p)).collect();
            phase.push(
                async move {
                    c.add_profiles_to_list(&list, &members)
                        .await
                        .map(|()| Done::Changed)
                }
                .boxed(),
            );
        }
        if i < TAGGED_LISTS {
            let list = id(&ids, "list", i);
            phase.push(
                async move { c.tag_lists(&tag, &[list]).await.map(|()| Done::Changed) }.boxed(),
            );
        } else if i < TAGGED_LISTS + TAGGED_SEGMENTS {
            let segment = id(&ids, "segment", i - TAGGED_LISTS);
            phase.push(
                async move {
                    c.tag_segments(&tag, &[segment])
                        .await
                        .map(|()| Done::Changed)
                }
                .boxed(),
            );
        }
    }
    writes_sent += phase.len();
    run(phase, &mut errors).await;
    assert!(errors.is_empty(), "phase 3 failed: {errors:#?}");

    // Phase 4: member removals, after the adds they undo.
    let mut phase: Vec<Write> = Vec::new();
    for i in 0..REMOVALS {
        let (c, list, member) = (&client, id(&ids, "list", i), id(&ids, "profile", 3 * i));
        phase.push(
            async move {
                c.remove_profiles_from_list(&list, &[member])
                    .await
                    .map(|()| Done::Changed)
            }
            .boxed(),
        );
    }
    writes_sent += phase.len();
    run(phase, &mut errors).await;
    assert!(errors.is_empty(), "phase 4 failed: {errors:#?}");
    let elapsed = started.elapsed();
    assert_eq!(writes_sent, 1000);

    // The faults really happened, and the client really recovered from them.
    let stats = handle.stats();
    let metrics = client.metrics();
    for status in ["429", "500", "reset"] {
        assert!(
            stats.by_status.get(status).copied().unwrap_or(0) > 0,
            "no {status} injected: {:?}",
            stats.by_status
        );
    }
    assert!(
        metrics.retries > 0 && metrics.rate_limited > 0,
        "{metrics:?}"
    );
    assert!(
        metrics.recovered_creates > 0,
        "no create was lost after taking effect, so recovery went untested: {metrics:?}"
    );
    eprintln!(
        "1000 writes under faults: {:.1} s, {} requests, {:?}, {metrics:?}",
        elapsed.as_secs_f64(),
        stats.total,
        stats.by_status
    );

    // Everything landed exactly once, with every update applied.
    handle.seed(|s| {
        let profile_index: BTreeMap<String, usize> = ids["profile"]
            .iter()
            .map(|(i, id)| (id.clone(), *i))
            .collect();
        assert_eq!(s.profiles.len(), PROFILES);
        for (i, id) in &ids["profile"] {
            let p = &s.profiles[id];
            assert_eq!(p.get_str("email"), Some(email(*i).as_str()));
            assert_eq!(p.get_str("first_name"), Some(format!("P{i}").as_str()));
            let title = (*i < PROFILES / 2).then(|| format!("T{i}"));
            assert_eq!(p.get_str("title"), title.as_deref(), "profile {i}");
        }

        assert_eq!(s.lists.len(), LISTS, "a list was created twice or lost");
        for (i, id) in &ids["list"] {
            let list = &s.lists[id];
            assert_eq!(list.name, format!("list-{i} renamed"));
            assert_eq!(list.opt_in_process.as_deref(), Some("double_opt_in"));
            let members: BTreeSet<usize> = list.members.keys().map(|m| profile_index[m]).collect();
            let expected: BTreeSet<usize> = match *i {
                i if i < REMOVALS => (3 * i + 1..3 * i + 3).collect(),
                i if i < LISTS_WITH_MEMBERS => (3 * i..3 * i + 3).collect(),
                _ => BTreeSet::new(),
            };
            assert_eq!(members, expected, "members of list {i}");
        }

        assert_eq!(
            s.segments.len(),
            SEGMENTS,
            "a segment was created twice or lost"
        );
        for (i, id) in &ids["segment"] {
            let segment = &s.segments[id];
            assert_eq!(segment.name, format!("segment-{i} renamed"));
            assert!(segment.is_starred && segment.is_active);
        }

        assert_eq!(s.tag_groups.len(), GROUPS + 1, "ours and the default one");
        for (i, id) in &ids["group"] {
            assert_eq!(s.tag_groups[id].name, format!("group-{i} renamed"));
        }

        assert_eq!(s.tags.len(), TAGS, "a tag was created twice or lost");
        for (i, id) in &ids["tag"] {
            let tag = &s.tags[id];
            assert_eq!(tag.name, format!("tag-{i} renamed"));
            assert_eq!(tag.group_id, ids["group"][&(i % GROUPS)]);
            let lists: Vec<&String> = tag.lists.iter().collect();
            let segments: Vec<&String> = tag.segments.iter().collect();
            if *i < TAGGED_LISTS {
                assert_eq!(lists, vec![&ids["list"][i]], "tag {i}");
                assert!(segments.is_empty(), "tag {i}");
            } else if *i < TAGGED_LISTS + TAGGED_SEGMENTS {
                assert!(lists.is_empty(), "tag {i}");
                assert_eq!(
                    segments,
                    vec![&ids["segment"][&(i - TAGGED_LISTS)]],
                    "tag {i}"
                );
            } else {
                assert!(lists.is_empty() && segments.is_empty(), "tag {i}");
            }
        }
    });
    handle.shutdown().await;
}

/// Sends `reads` requests from `read` with `in_flight` concurrency, all at once, and returns the
/// wall time. Every read must succeed.
async fn burst<F>(reads: usize, in_flight: usize, read: impl Fn() -> F) -> Duration
where
    F: std::future::Future<Output = Result<(), ApiError>>,
{
    let started = Instant::now();
    let results: Vec<Result<(), ApiError>> = futures::stream::iter((0..reads).map(|_| read()))
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        failed.is_empty(),
        "{} reads failed: {failed:?}",
        failed.len()
    );
    elapsed
}

fn assert_no_429(handle: &EmulatorHandle, client: &KlaviyoClient, reads: u64) {
    let stats = handle.stats();
    let metrics = client.metrics();
    assert_eq!(
        stats.by_status.get("429"),
        None,
        "the emulator refused requests: {:?}",
        stats.by_status
    );
    assert_eq!(metrics.rate_limited, 0, "{metrics:?}");
    assert_eq!(
        stats.by_status.get("200"),
        Some(&reads),
        "{:?}",
        stats.by_status
    );
    // The burst was faster than the limits allow, so the client had to hold requests back;
    // without this the test could pass on a machine too slow to ever reach a limit.
    assert!(metrics.limiter_wait_ms > 0, "{metrics:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_burst_of_2000_reads_gets_no_429_at_scaled_real_limits() {
    // Factor 5 rather than more: a loaded 2-core machine cannot send much faster than 375/s, and
    // the test must still make the client hold requests back.
    const FACTOR: f64 = 5.0;
    const READS: usize = 2000;
    let handle = start(RateLimitMode::Scaled(FACTOR), None).await;
    let list = handle.seed(|s| s.create_list("Read me", None));
    let client = client(&handle, Some(FACTOR));
    // get_list is L-tier: 75/s and 750/min, here 375/s and 3,750/min.
    let elapsed = burst(READS, 64, || {
        let (client, list) = (client.clone(), list.clone());
        async move { client.get_list(&list).await.map(drop) }
    })
    .await;
    assert_no_429(&handle, &client, READS as u64);
    // At most 375 in any second: 2,000 reads need six windows, so they span more than 5 s.
    assert!(elapsed >= Duration::from_secs(5), "{elapsed:?}");
    eprintln!(
        "{READS} paced reads (get_list, factor {FACTOR}): {:.2} s, {:?}",
        elapsed.as_secs_f64(),
        client.metrics()
    );
    handle.shutdown().await;
}

/// The case exactly: Klaviyo's published limits on both sides, unscaled. get_list is
/// L-tier (75/s, 750/min), so 2,000 reads need at least two full minutes: about three minutes of
/// wall time, spent in the limiter, not in assertions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_burst_of_2000_reads_gets_no_429_at_the_published_limits() {
    const READS: usize = 2000;
    let handle = start(RateLimitMode::Real, None).await;
    let list = handle.seed(|s| s.create_list("Read me", None));
    let client = client(&handle, Some(1.0));
    let elapsed = burst(READS, 64, || {
        let (client, list) = (client.clone(), list.clone());
        async move { client.get_list(&list).await.map(drop) }
    })
    .await;
    assert_no_429(&handle, &client, READS as u64);
    // At most 750 in any minute: 2,000 reads span more than two minutes.
    assert!(elapsed >= Duration::from_secs(120), "{elapsed:?}");
    eprintln!(
        "{READS} paced reads (get_list, factor 1.0): {:.2} s",
        elapsed.as_secs_f64()
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_published_s_tier_limit_is_paced_without_429() {
    // get_tags is S-tier: 3/s and 60/min, as published. 20 reads fired at once are almost seven
    // times the per-second limit; staying under 60 keeps the test within one steady window
    // (about 20 s) instead of the two minutes 100 reads would need.
    const READS: usize = 20;
    let handle = start(RateLimitMode::Real, None).await;
    handle.seed(|s| s.create_tag("only", None).expect("tag"));
    let client = client(&handle, Some(1.0));
    let elapsed = burst(READS, READS, || {
        let client = client.clone();
        async move {
            let tags: Vec<_> = client.list_tags().try_collect().await?;
            assert_eq!(tags.len(), 1);
            Ok(())
        }
    })
    .await;
    assert_no_429(&handle, &client, READS as u64);
    // At most 3 in any second: 20 reads span at least 6 seconds.
    assert!(elapsed >= Duration::from_secs(6), "{elapsed:?}");
    eprintln!(
        "{READS} paced reads (get_tags, factor 1.0): {:.2} s",
        elapsed.as_secs_f64()
    );
    handle.shutdown().await;
}
