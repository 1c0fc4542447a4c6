//! `ctl status --watch`: the status redrawn in place while a rollout runs, the way
//! `kubectl argo rollouts get rollout --watch` shows one.
//!
//! One frame per `--interval`, each from fresh API reads. On a terminal each frame replaces
//! the last (cursor home, clear screen) with a footer saying when it was read; into a pipe or
//! a file frames follow one another (tables separated by a blank line, `-o json` one compact
//! document per line), so a script can follow it too. An admin API that stops answering is
//! shown in the frame and asked again at the next tick — a watch is for riding out restarts.
//! It ends on Ctrl-C (SIGINT) or SIGTERM, or after `--timeout`, with exit 0: stopping a
//! watch is not a failure. Bounded: one request in flight at a time, nothing kept between
//! frames.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, Instant};

use super::{status, Api};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Keep redrawing the status until Ctrl-C (like `kubectl argo rollouts get rollout --watch`).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// How often --watch reads and redraws.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval, requires = "watch")]
    pub interval: Duration,
    /// Stop watching after this long and exit 0 (default: until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = switchyard_config::parse_duration, requires = "watch")]
    pub timeout: Option<Duration>,
}

/// At least 100 ms: a watch must not turn into a load test of the admin API.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = switchyard_config::parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s} is too short for a watch (at least 100ms)"));
    }
    Ok(d)
}

/// Draws frames until a stop signal or the timeout; always `Ok` (a stopped watch succeeded).
pub async fn run(
    api: &Api,
    service: Option<&str>,
    json_out: bool,
    args: &WatchArgs,
) -> Result<String, String> {
    let install =
        |kind: SignalKind| signal(kind).map_err(|e| format!("cannot install signal handler: {e}"));
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    let terminal = std::io::stdout().is_terminal();
    let end = args.timeout.map(|t| Instant::now() + t);
    let mut next = Instant::now();
    loop {
        // Ctrl-C is heard while a read is in flight too (it may take up to 30 s).
        let read = tokio::select! {
            read = status(api, service, json_out, SystemTime::now()) => read,
            _ = interrupt.recv() => return Ok(String::new()),
            _ = terminate.recv() => return Ok(String::new()),
        };
        let frame = match read {
            Ok(text) if json_out => compact(&text),
            Ok(text) => text,
            Err(e) if json_out => format!("{}\n", serde_json::json!({ "error": e })),
            Err(e) => format!("error: {e}\n(asking again in {:?})\n", args.interval),
        };
        let mut out = std::io::stdout().lock();
        let written = if terminal {
            let at = humantime::format_rfc3339_seconds(SystemTime::now());
            write!(
                out,
                "\x1b[H\x1b[2J{frame}\nevery {:?}, read at {at}; Ctrl-C to stop\n",
                args.interval
            )
        } else if json_out {
            write!(out, "{frame}")
        } else {
            writeln!(out, "{frame}")
        };
        // A closed pipe (`| head`) ends the watch like Ctrl-C does.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(String::new());
        }
        drop(out);

        next += args.interval;
        let now = Instant::now();
        if next < now {
            // A slow answer: skip the ticks it missed rather than firing them back to back.
            next = now + args.interval;
        }
        let wake = match end {
            Some(end) if end <= next => end,
            _ => next,
        };
        tokio::select! {
            _ = sleep_until(wake) => {}
            _ = interrupt.recv() => return Ok(String::new()),
            _ = terminate.recv() => return Ok(String::new()),
        }
        if end.is_some_and(|end| Instant::now() >= end) {
            return Ok(String::new());
        }
    }
}

/// A pretty-printed JSON document as one line.
fn compact(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(doc) => format!("{doc}\n"),
        Err(_) => text.to_string(),
    }
}
