//! Weighted split: each version gets weight / sum of weights of the traffic (SPEC §4.3).

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_ten_split_is_within_three_points() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let service = Service::new("api")
        .version("blue", "v1", &[blue.addr], 90)
        .version("green", "v2", &[green.addr], 10);
    let proxy = Proxy::builder().service(service).start().await;

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
    let service = Service::new("api")
        .version("blue", "v1", &[blue.addr], 0)
        .version("green", "v2", &[green.addr], 100);
    let proxy = Proxy::builder().service(service).start().await;

    let tally = tally(proxy.listen, 500).await;

    assert_eq!(tally.count("green"), 500, "{tally}");
    assert_eq!(blue.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_versions_split_fifty_thirty_twenty() {
    let blue = Backend::start("blue-1").await;
    let green = Backend::start("green-1").await;
    let red = Backend::start("red-1").await;
    let service = Service::new("api")
        .version("blue", "v1", &[blue.addr], 50)
        .version("green", "v2", &[green.addr], 30)
        .version_raw("red", "v3", &[red.addr.to_string()], "\"20%\"");
    let proxy = Proxy::builder().service(service).start().await;

    let tally = tally(proxy.listen, 4000).await;

    tally
        .check_split(&[("blue", 50.0), ("green", 30.0), ("red", 20.0)], 3.0)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_of_one_version_share_its_traffic() {
    let blue1 = Backend::start("blue-1").await;
    let blue2 = Backend::start("blue-2").await;
    let service = Service::new("api").version("blue", "v1", &[blue1.addr, blue2.addr], 100);
    let proxy = Proxy::builder().service(service).start().await;

    let tally = tally(proxy.listen, 400).await;

    assert_eq!(tally.count("blue"), 400, "{tally}");
    assert!(
        blue1.hits() >= 100 && blue2.hits() >= 100,
        "both backends should get a fair share: blue-1 {} blue-2 {}",
        blue1.hits(),
        blue2.hits()
    );
}
