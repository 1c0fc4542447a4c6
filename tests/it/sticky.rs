//! Sticky selection: one key, one version; and the split is monotone when weights move
//! (SPEC §4.3 — keys on the canary stay there as its share grows).

use std::collections::BTreeSet;

use crate::harness::*;

fn sticky_config(blue: &Backend, green: &Backend, weights: (u32, u32)) -> ProxyBuilder {
    Proxy::builder()
        .service(Service::two("api", (blue.addr, green.addr), weights).sticky_header("x-user-id"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_header_key_lands_on_same_version_every_time() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = sticky_config(&blue, &green, (50, 50)).start().await;

    for key in ["alice", "bob", "carol", "dave"] {
        let versions = versions_of(proxy.listen, 100, move |_| {
            get_with("/", &[("x-user-id", key)])
        })
        .await;
        let distinct: BTreeSet<&String> = versions.iter().collect();
        assert_eq!(distinct.len(), 1, "key {key} was served by {distinct:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_key_are_still_served() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = sticky_config(&blue, &green, (50, 50)).start().await;

    let tally = tally(proxy.listen, 400).await;

    // Missing key → random choice: both versions show up.
    assert!(
        tally.count("blue") > 100 && tally.count("green") > 100,
        "{tally}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_the_canary_keeps_its_keys_and_reaches_the_new_share() {
    const KEYS: usize = 2000;
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = sticky_config(&blue, &green, (90, 10)).start().await;
    let keyed = |i: usize| get_with("/", &[("x-user-id", &format!("user-{i}"))]);

    let before = versions_of(proxy.listen, KEYS, keyed).await;
    Tally::of(&before)
        .check_split(&[("green", 10.0)], 3.0)
        .unwrap();
    let on_green_before: BTreeSet<usize> = (0..KEYS).filter(|&i| before[i] == "green").collect();

    proxy.rewrite_config(&sticky_config(&blue, &green, (70, 30)).yaml());
    let after = eventually(
        RELOAD_TIMEOUT,
        "green's share of keys to reach ~30%",
        async || {
            let after = try_versions_of(proxy.listen, KEYS, 4, keyed).await?;
            Tally::of(&after).check_split(&[("green", 30.0)], 3.0)?;
            Ok(after)
        },
    )
    .await;

    let moved_off_green: Vec<usize> = on_green_before
        .iter()
        .copied()
        .filter(|&i| after[i] != "green")
        .collect();
    assert!(
        moved_off_green.is_empty(),
        "{} of {} keys left green when green grew from 10% to 30% (e.g. user-{:?})",
        moved_off_green.len(),
        on_green_before.len(),
        &moved_off_green[..moved_off_green.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_cookie_lands_on_same_version_and_cookies_spread_over_versions() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let service = Service::two("api", (blue.addr, green.addr), (50, 50));
    let proxy = Proxy::builder()
        .service(service.line("sticky: { cookie: session }"))
        .start()
        .await;

    // The session cookie among others, in different positions.
    for cookie in ["session=abc123", "theme=dark; session=xyz789; lang=en"] {
        let versions = versions_of(proxy.listen, 60, move |_| {
            get_with("/", &[("cookie", cookie)])
        })
        .await;
        let distinct: BTreeSet<&String> = versions.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "cookie {cookie:?} was served by {distinct:?}"
        );
    }

    // Distinct sessions split roughly by weight (each asked twice; both answers agree).
    let versions = versions_of(proxy.listen, 400, |i| {
        get_with("/", &[("cookie", &format!("session=s{}", i / 2))])
    })
    .await;
    for pair in versions.chunks(2) {
        assert_eq!(pair[0], pair[1], "one session, two versions");
    }
    Tally::of(&versions)
        .check_split(&[("blue", 50.0), ("green", 50.0)], 15.0)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxy_processes_agree_on_every_key() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    // Seedless hash: a second replica (or a restart) sends every key to the same version.
    let a = sticky_config(&blue, &green, (60, 40)).start().await;
    let b = sticky_config(&blue, &green, (60, 40)).start().await;
    let keyed = |i: usize| get_with("/", &[("x-user-id", &format!("key-{i}"))]);

    let on_a = versions_of(a.listen, 500, keyed).await;
    let on_b = versions_of(b.listen, 500, keyed).await;

    let disagree = (0..500).filter(|&i| on_a[i] != on_b[i]).count();
    assert_eq!(
        disagree, 0,
        "{disagree} of 500 keys landed on different versions"
    );
    Tally::of(&on_a)
        .check_split(&[("green", 40.0)], 8.0)
        .unwrap();
}
