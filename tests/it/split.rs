//! Weighted split: each version gets weight / sum of weights of the traffic (SPEC §4.3).

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_ten_split_is_within_three_points() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 90 }}
              green: {{ release: v2, backends: ["{green}"], weight: 10 }}
        "#,
        blue = blue.addr,
        green = green.addr,
    ))
    .await;

    let tally = tally(proxy.listen, 3000).await;

    assert_eq!(tally.total(), 3000);
    tally
        .check_split(&[("blue", 90.0), ("green", 10.0)], 3.0)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_hundred_sends_everything_to_one_version() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 0 }}
              green: {{ release: v2, backends: ["{green}"], weight: 100 }}
        "#,
        blue = blue.addr,
        green = green.addr,
    ))
    .await;

    let tally = tally(proxy.listen, 500).await;

    assert_eq!(tally.count("green"), 500, "{tally}");
    assert_eq!(blue.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_versions_split_fifty_thirty_twenty() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let red = Backend::start("red-1").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue:  {{ release: v1, backends: ["{blue}"], weight: 50 }}
              green: {{ release: v2, backends: ["{green}"], weight: 30 }}
              red:   {{ release: v3, backends: ["{red}"], weight: "20%" }}
        "#,
        blue = blue.addr,
        green = green.addr,
        red = red.addr,
    ))
    .await;

    let tally = tally(proxy.listen, 4000).await;

    tally
        .check_split(&[("blue", 50.0), ("green", 30.0), ("red", 20.0)], 3.0)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_of_one_version_share_its_traffic() {
    let blue1 = Backend::start("blue-1").await;
    let blue2 = Backend::start("blue-2").await;
    let proxy = Proxy::start_services(&format!(
        r#"
          api:
            versions:
              blue: {{ release: v1, backends: ["{b1}", "{b2}"], weight: 100 }}
        "#,
        b1 = blue1.addr,
        b2 = blue2.addr,
    ))
    .await;

    let tally = tally(proxy.listen, 400).await;

    assert_eq!(tally.count("blue"), 400, "{tally}");
    assert!(
        blue1.hits() >= 100 && blue2.hits() >= 100,
        "both backends should get a fair share: blue-1 {} blue-2 {}",
        blue1.hits(),
        blue2.hits()
    );
}
