//! The dashboard in a real browser (SPEC §10): the real `switchyard demo`, then headless
//! Chromium renders `GET /` on its admin address after the automatic rollback.
//!
//! Chromium runs as a plain command — `--dump-dom` for the rendered page (with a virtual time
//! budget so the page's one-second refresh loop has run) and `--screenshot` for a picture whose
//! path the test prints. `.ci/run` installs Debian's `chromium`; elsewhere, a missing browser
//! fails the test with how to install it (or set `CHROMIUM` to a Chrome/Chromium binary).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::demo::{weight_of, Demo};

/// The whole test, demo start to screenshot.
const TEST_BOUND: Duration = Duration::from_secs(85);
/// One Chromium run.
const BROWSER_BOUND: Duration = Duration::from_secs(30);
/// Virtual time the page gets before the DOM is dumped: a few refreshes of its loop.
const VIRTUAL_TIME_MS: u32 = 3000;

/// `CHROMIUM`, else the first of the usual names on `PATH`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the dashboard test needs a headless Chromium and found none on PATH ({}).\n\
         Install it: sudo apt-get install --no-install-recommends chromium   (Debian/Ubuntu;\n\
         .ci/run does this), or set CHROMIUM=/path/to/chrome",
        names.join(", ")
    );
}

/// Runs headless Chromium on `url` with `args` (bounded); returns its stdout.
async fn browse(browser: &Path, profile: &Path, args: &[String], url: &str) -> String {
    let run = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(BROWSER_BOUND, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} did not finish within {BROWSER_BOUND:?}",
                browser.display()
            )
        })
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed with {}:\n{}",
        browser.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The weight bar of `version` in the rendered DOM: (`data-weight`, its label).
fn weight_bar(dom: &str, version: &str) -> Option<(String, String)> {
    dom.split("<div class=\"weight").skip(1).find_map(|chunk| {
        let tag = &chunk[..chunk.find('>')?];
        if !tag.contains(&format!("data-version=\"{version}\"")) {
            return None;
        }
        let weight = tag.split("data-weight=\"").nth(1)?.split('"').next()?;
        let label = chunk.split("class=\"label\">").nth(1)?.split('<').next()?;
        Some((weight.to_string(), label.to_string()))
    })
}

/// Why the rendered dashboard does not yet show the rollback, if it does not.
fn missing(dom: &str) -> Option<String> {
    if !dom.contains("data-kind=\"rolled_back\"") {
        return Some("no rolled_back event in the rendered timeline".into());
    }
    if !dom.contains("rolled back v2 2.0") {
        return Some("the rolled_back event does not name v2 2.0".into());
    }
    match weight_bar(dom, "v2") {
        Some((w, label)) if w == "0" && label == "0% of traffic" => None,
        other => Some(format!("the v2 weight bar is {other:?}, not 0%")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_automatic_rollback() {
    let browser = chromium();
    tokio::time::timeout(TEST_BOUND, async {
        let mut demo = Demo::start(&[]);
        let svc = demo
            .wait_for_state("rolled_back", Duration::from_secs(60))
            .await;
        assert_eq!(weight_of(&svc, "v2"), 0.0, "{svc}");

        let profile = tempfile::tempdir().expect("tempdir");
        let url = format!("http://{}/", demo.admin);
        let deadline = Instant::now() + Duration::from_secs(20);
        let dom = loop {
            let dom = browse(&browser, profile.path(), &["--dump-dom".into()], &url).await;
            match missing(&dom) {
                None => break dom,
                Some(why) if Instant::now() >= deadline => {
                    panic!("the dashboard does not show the rollback: {why}\n--- DOM ---\n{dom}")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        assert_eq!(
            weight_bar(&dom, "v1"),
            Some(("100".into(), "100% of traffic".into()))
        );
        assert!(dom.contains("data-state=\"rolled_back\""), "{dom}");

        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        browse(
            &browser,
            profile.path(),
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1280,900".into(),
            ],
            &url,
        )
        .await;
        let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "not a real screenshot"
        );
        // Straight to stderr, past the test harness's capture, so CI logs show where it is.
        let _ = writeln!(
            std::io::stderr(),
            "dashboard screenshot: {}",
            shot.display()
        );
    })
    .await
    .unwrap_or_else(|_| panic!("the dashboard test took longer than {TEST_BOUND:?}"));
}

#[tokio::test]
async fn the_dashboard_page_is_self_contained_html() {
    let mut demo = Demo::start(&["--healthy"]);
    let _ = demo
        .wait_for_state("progressing", Duration::from_secs(20))
        .await;
    let reply = crate::harness::get_once(demo.admin, "/")
        .await
        .expect("GET /");
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "text/html; charset=utf-8");
    let csp = reply.headers["content-security-policy"]
        .to_str()
        .unwrap_or("");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = reply.text();
    assert!(html.contains("<title>Switchyard</title>"));
    assert!(
        !html.contains("https://"),
        "the dashboard must not load external assets"
    );
}

#[test]
fn the_weight_bar_is_read_from_the_dom() {
    let dom = r#"<div class="version" data-version="v2"><div class="weight canary rolledback" data-version="v2" data-weight="0" role="meter"><div class="fill" style="width:0%"></div><span class="label">0% of traffic</span></div></div>"#;
    assert_eq!(
        weight_bar(dom, "v2"),
        Some(("0".into(), "0% of traffic".into()))
    );
    assert_eq!(weight_bar(dom, "v1"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_panel_with_every_replica() {
    use crate::harness::etcd::{leader_of, start_fleet, Etcd};
    let browser = chromium();
    let etcd = Etcd::start().await;
    let blue = crate::harness::Backend::start("blue").await;
    let services = format!(
        "api:\n  versions:\n    blue: {{ release: v1, backends: [\"{}\"] }}\n",
        blue.addr
    );
    let fleet = start_fleet(&etcd, 2, 2, &services).await;
    let leader = leader_of(&fleet.iter().collect::<Vec<_>>()).await;
    let profile = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{}/", fleet[1].admin);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dom = browse(&browser, profile.path(), &["--dump-dom".into()], &url).await;
        let rows = ["edge-1", "edge-2"]
            .iter()
            .all(|r| dom.contains(&format!("data-replica=\"{r}\"")));
        if rows && dom.contains(&format!("leader: {leader}")) && dom.contains("api 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fleet panel with both replicas and leader {leader}:\n{dom}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
