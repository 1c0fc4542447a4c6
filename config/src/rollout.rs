//! Decoding a service's `rollout:` block: which version is the canary, the traffic steps it
//! climbs, the Flagger-style analysis that can roll it back, and the webhooks told about it.
//!
//! The block is written to read like a runbook (`traffic: 10%`, `duration: 5m`), and the
//! analysis block accepts Flagger's shape as-is, so operators can bring their habits along.

use std::collections::HashMap;

use crate::decoder::{item, Decoder};
use crate::schema::*;
use crate::service::VersionNames;
use crate::yaml::Node;

pub(crate) fn rollout(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    versions: &VersionNames<'_>,
) -> Option<Rollout> {
    let f = d.map(
        node,
        path,
        &[
            "stable",
            "canary",
            "steps",
            "analysis",
            "webhooks",
            "safety_net",
            "mirror",
        ],
    )?;
    let stable = f.req(d, "stable", |d, n, p| versions.check(d, n, p));
    let canary = f.req(d, "canary", |d, n, p| versions.check(d, n, p));
    if let (Some(stable), Some(canary), Some(canary_node)) = (&stable, &canary, f.get("canary")) {
        if stable == canary {
            d.error(
                canary_node.pos,
                &f.path("canary"),
                format!(
                    "canary and stable are both {canary:?}; the canary must be another version"
                ),
            );
        }
    }
    let steps = f.req(d, "steps", steps);
    let analysis = f.opt(d, "analysis", analysis).unwrap_or_default();
    let webhooks = f
        .opt(d, "webhooks", |d, n, p| d.list_of(n, p, webhook))
        .unwrap_or_default();
    let safety_net = f.opt(d, "safety_net", safety_net).flatten();
    let mirror = f.opt(d, "mirror", mirror).unwrap_or_default();
    Some(Rollout {
        stable: stable?,
        canary: canary?,
        steps: steps?,
        analysis,
        webhooks,
        safety_net,
        mirror,
    })
}

fn steps(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<Step>> {
    let items = d.list(node, path)?;
    let Some(last) = items.len().checked_sub(1) else {
        d.error(
            node.pos,
            path,
            "a rollout needs at least one step, e.g. - { traffic: 100% }",
        );
        return None;
    };
    let decoded: Vec<Option<Step>> = items
        .iter()
        .enumerate()
        .map(|(i, n)| step(d, n, &item(path, i), i == last))
        .collect();
    decoded.into_iter().collect()
}

/// Every step holds its traffic for a duration, except the last: finishing it is promotion.
/// A step is either `traffic: N%` (users' share) or `mirror: N%` (copies only, SPEC §13).
fn step(d: &mut Decoder, node: &Node, path: &str, is_last: bool) -> Option<Step> {
    let f = d.map(node, path, &["traffic", "mirror", "duration"])?;
    let (traffic, mirror) = match (f.get("traffic"), f.get("mirror")) {
        (_, None) => (
            f.req(d, "traffic", |d, n, p| d.share(n, p, "traffic", 100)),
            None,
        ),
        (None, Some(_)) => {
            let mirror = f.opt(d, "mirror", |d, n, p| d.share(n, p, "mirror", 100));
            if is_last {
                d.error(
                    f.pos,
                    path,
                    "the last step is the promotion and cannot be a mirror step (add e.g. - { traffic: 100% } after it)",
                );
            }
            (Some(0), Some(mirror?))
        }
        (Some(_), Some(n)) => {
            d.error(
                n.pos,
                &f.path("mirror"),
                "a step is either traffic (users' share) or mirror (copies only), not both",
            );
            (None, None)
        }
    };
    let duration = f.opt(d, "duration", Decoder::positive_duration);
    match (f.get("duration"), is_last) {
        (None, false) => d.error(
            f.pos,
            path,
            "missing required field \"duration\" (every step but the last holds its traffic for a while, e.g. duration: 5m)",
        ),
        (Some(n), true) => d.error(
            n.pos,
            &f.path("duration"),
            "the last step is the promotion and takes no duration (remove it, or add a step after it)",
        ),
        _ => {}
    }
    Some(Step {
        traffic: traffic?,
        mirror,
        duration,
    })
}

/// `safety_net: { retry_on_stable: true, budget: 20% }`; `retry_on_stable: false` (or
/// `safety_net: off`) leaves it off. Outer `None`: invalid (reported); inner: off.
fn safety_net(d: &mut Decoder, node: &Node, path: &str) -> Option<Option<SafetyNet>> {
    if let Some(word) = node.scalar() {
        return match switch(d, node, path, word)? {
            true => Some(Some(SafetyNet {
                budget: SafetyNet::DEFAULT_BUDGET,
            })),
            false => Some(None),
        };
    }
    let f = d.map(node, path, &["retry_on_stable", "budget"])?;
    let on = f.req(d, "retry_on_stable", |d, n, p| {
        let word = n.scalar().unwrap_or_default().to_string();
        switch(d, n, p, &word)
    });
    let budget = f.opt(d, "budget", |d, n, p| {
        let budget = d.share(n, p, "budget", 100)?;
        if budget == 0 {
            d.error(
                n.pos,
                p,
                "a budget of 0% allows only the floor of 10 replays per second; give at least 1%, or retry_on_stable: false",
            );
            return None;
        }
        Some(budget)
    });
    let budget = budget.unwrap_or(SafetyNet::DEFAULT_BUDGET);
    Some(on?.then_some(SafetyNet { budget }))
}

/// `true`/`on` or `false`/`off`.
fn switch(d: &mut Decoder, node: &Node, path: &str, word: &str) -> Option<bool> {
    match word.to_ascii_lowercase().as_str() {
        "true" | "on" => Some(true),
        "false" | "off" => Some(false),
        _ => {
            d.error(
                node.pos,
                path,
                format!("expected true or false, found {word:?}"),
            );
            None
        }
    }
}

fn mirror(d: &mut Decoder, node: &Node, path: &str) -> Option<Mirror> {
    let f = d.map(node, path, &["max_body"])?;
    let def = Mirror::default();
    Some(Mirror {
        max_body: f.opt(d, "max_body", byte_size).unwrap_or(def.max_body),
    })
}

/// A size in bytes: `65536`, `64KiB`, `1MiB` (also `KB`/`MB` as powers of 1000).
fn byte_size(d: &mut Decoder, node: &Node, path: &str) -> Option<u64> {
    let text = node.scalar().unwrap_or_default();
    let units: [(&str, u64); 7] = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("KB", 1000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("B", 1),
    ];
    let (digits, unit) = units
        .iter()
        .find_map(|(u, m)| text.strip_suffix(u).map(|t| (t.trim_end(), *m)))
        .unwrap_or((text, 1));
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(unit)) {
        Some(n) => Some(n),
        None => {
            d.error(
                node.pos,
                path,
                format!("invalid size {text:?} (expected bytes such as 65536, 64KiB or 1MiB)"),
            );
            None
        }
    }
}

fn analysis(d: &mut Decoder, node: &Node, path: &str) -> Option<Analysis> {
    let f = d.map(
        node,
        path,
        &[
            "judge",
            "alpha",
            "interval",
            "threshold",
            "min_requests",
            "fast_fail",
            "metrics",
        ],
    )?;
    let def = Analysis::default();
    Some(Analysis {
        judge: f
            .opt(d, "judge", |d, n, p| {
                d.choice(
                    n,
                    p,
                    "judge",
                    &[
                        ("threshold", JudgeKind::Threshold),
                        ("sequential", JudgeKind::Sequential),
                    ],
                )
            })
            .unwrap_or(def.judge),
        alpha: f.opt(d, "alpha", alpha).unwrap_or(def.alpha),
        interval: f
            .opt(d, "interval", Decoder::positive_duration)
            .unwrap_or(def.interval),
        threshold: f
            .opt(d, "threshold", Decoder::positive)
            .unwrap_or(def.threshold),
        min_requests: f
            .opt(d, "min_requests", Decoder::positive)
            .unwrap_or(def.min_requests),
        fast_fail: f
            .opt_or(d, "fast_fail", def.fast_fail, fast_fail)
            .unwrap_or(def.fast_fail),
        metrics: f.opt(d, "metrics", metrics).unwrap_or_default(),
    })
}

/// A probability strictly between 0 and 1: at 0 the judge could never roll back, at 1 the
/// bound it promises says nothing.
fn alpha(d: &mut Decoder, node: &Node, path: &str) -> Option<f64> {
    let value = d.number(node, path)?;
    if value == 0.0 || value >= 1.0 {
        d.error(
            node.pos,
            path,
            format!("alpha {value} must be more than 0 and less than 1 (a probability, not a percentage: 0.01 is 1%)"),
        );
        return None;
    }
    Some(value)
}

/// `fast_fail: off` (or `false`) disables it; a mapping may change either field.
/// Outer `None`: invalid (reported); inner `None`: disabled.
fn fast_fail(d: &mut Decoder, node: &Node, path: &str) -> Option<Option<FastFail>> {
    if let Some(word) = node.scalar() {
        return match word.to_ascii_lowercase().as_str() {
            "off" | "false" => Some(None),
            "on" | "true" => Some(Some(FastFail::default())),
            _ => {
                d.error(
                    node.pos,
                    path,
                    format!("expected off or a mapping such as {{ error_rate: 50, min_requests: 20 }}, found {word:?}"),
                );
                None
            }
        };
    }
    let f = d.map(node, path, &["error_rate", "min_requests"])?;
    let def = FastFail::default();
    Some(Some(FastFail {
        error_rate: f
            .opt(d, "error_rate", |d, n, p| percentage(d, n, p, false))
            .unwrap_or(def.error_rate),
        min_requests: f
            .opt(d, "min_requests", Decoder::positive)
            .unwrap_or(def.min_requests),
    }))
}

/// A percentage of requests; `zero_ok` says whether 0 is meaningful for the field.
fn percentage(d: &mut Decoder, node: &Node, path: &str, zero_ok: bool) -> Option<f64> {
    let value = d.number(node, path)?;
    if value > 100.0 || (!zero_ok && value == 0.0) {
        let low = if zero_ok { "0" } else { "more than 0" };
        d.error(
            node.pos,
            path,
            format!("{value} is not a percentage ({low} up to 100)"),
        );
        return None;
    }
    Some(value)
}

fn metrics(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<MetricCheck>> {
    let items = d.list(node, path)?;
    let mut seen = HashMap::new();
    let mut checks = Some(Vec::with_capacity(items.len()));
    for (i, n) in items.iter().enumerate() {
        let path = item(path, i);
        let Some(check) = metric(d, n, &path) else {
            checks = None;
            continue;
        };
        // Two checks of one metric would count every bad window twice towards the threshold.
        if let Some(first) = seen.get(&check.metric) {
            let pos = n.get("name").map_or(n.pos, |name| name.pos);
            d.error(
                pos,
                &crate::decoder::child(&path, "name"),
                format!(
                    "metric {:?} is already checked at metrics[{first}]",
                    check.metric.as_str()
                ),
            );
        } else {
            seen.insert(check.metric, i);
        }
        if let Some(list) = checks.as_mut() {
            list.push(check);
        }
    }
    checks
}

fn metric(d: &mut Decoder, node: &Node, path: &str) -> Option<MetricCheck> {
    let f = d.map(node, path, &["name", "threshold", "max_increase"])?;
    let metric = f.req(d, "name", |d, n, p| {
        d.choice(
            n,
            p,
            "metric",
            &[
                ("error-rate", MetricName::ErrorRate),
                ("latency-p99", MetricName::LatencyP99),
            ],
        )
    });
    // error-rate is a percentage; latency-p99 is in milliseconds and has no upper bound.
    let threshold = f.req(d, "threshold", |d, n, p| match metric {
        Some(MetricName::ErrorRate) => percentage(d, n, p, true),
        _ => d.number(n, p),
    });
    let max_increase = f.opt(d, "max_increase", Decoder::number);
    Some(MetricCheck {
        metric: metric?,
        threshold: threshold?,
        max_increase,
    })
}

fn webhook(d: &mut Decoder, node: &Node, path: &str) -> Option<Webhook> {
    let f = d.map(node, path, &["type", "url", "timeout"])?;
    let kind = f.req(d, "type", |d, n, p| {
        d.choice(
            n,
            p,
            "webhook type",
            &[("gate", WebhookKind::Gate), ("event", WebhookKind::Event)],
        )
    });
    let url = f.req(d, "url", url);
    let timeout = f.opt_or(
        d,
        "timeout",
        Webhook::DEFAULT_TIMEOUT,
        Decoder::positive_duration,
    );
    Some(Webhook {
        kind: kind?,
        url: url?,
        timeout: timeout?,
    })
}

fn url(d: &mut Decoder, node: &Node, path: &str) -> Option<String> {
    let url = d.string(node, path)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(str::is_empty) {
        d.error(
            node.pos,
            path,
            format!("invalid webhook url {url:?} (expected http:// or https://, e.g. http://127.0.0.1:7000/confirm)"),
        );
        return None;
    }
    Some(url)
}
