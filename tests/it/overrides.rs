//! Overrides: a matching header or cookie forces its version before weights are looked at
//! (SPEC §4.2), even a version at weight 0.

use crate::harness::*;

async fn proxy_with_overrides(blue: &Backend, green: &Backend) -> Proxy {
    let service = Service::blue_green("api", blue.addr, green.addr).line(
        r#"
        overrides:
          - { header: x-canary, value: always, version: green }
          - { cookie: canary, value: "1", version: green }
        "#,
    );
    Proxy::builder().service(service).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_override_reaches_a_weight_zero_version() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = proxy_with_overrides(&blue, &green).await;

    let forced = Tally::of(
        &versions_of(proxy.listen, 100, |_| {
            get_with("/", &[("x-canary", "always")])
        })
        .await,
    );
    let plain = tally(proxy.listen, 100).await;

    assert_eq!(
        forced.count("green"),
        100,
        "with x-canary: always → {forced}"
    );
    assert_eq!(plain.count("blue"), 100, "without the header → {plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_override_needs_the_exact_value() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = proxy_with_overrides(&blue, &green).await;

    let other = Tally::of(
        &versions_of(proxy.listen, 50, |_| {
            get_with("/", &[("x-canary", "never")])
        })
        .await,
    );

    assert_eq!(other.count("blue"), 50, "x-canary: never → {other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_override_reaches_a_weight_zero_version() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = proxy_with_overrides(&blue, &green).await;

    let alone = Tally::of(
        &versions_of(proxy.listen, 50, |_| {
            get_with("/", &[("cookie", "canary=1")])
        })
        .await,
    );
    let among = Tally::of(
        &versions_of(proxy.listen, 50, |_| {
            get_with("/", &[("cookie", "a=b; canary=1; c=d")])
        })
        .await,
    );
    let wrong = Tally::of(
        &versions_of(proxy.listen, 50, |_| {
            get_with("/", &[("cookie", "canary=0")])
        })
        .await,
    );

    assert_eq!(alone.count("green"), 50, "cookie canary=1 → {alone}");
    assert_eq!(
        among.count("green"),
        50,
        "canary=1 among other cookies → {among}"
    );
    assert_eq!(wrong.count("blue"), 50, "cookie canary=0 → {wrong}");
}
