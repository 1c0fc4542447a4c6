//! The access log: one line per request, written off the request path.
//!
//! Off unless the config has `access_log`. When on, a request carries a [`Pending`] line
//! (cheap clones of what was parsed: method, URI, host, user agent, referer) in its context;
//! when the response ends — or the client goes away — the phases' one finishing step fills in
//! status, bytes sent, duration, service, version and backend, and hands the line to a
//! bounded channel with `try_send`: exactly one line per request. A dedicated writer thread formats and writes lines (JSON or the Apache
//! "combined" format) to stdout or a file. A request never waits for the log: when the channel
//! is full the line is dropped and counted in `switchyard_access_log_dropped_total`.
//! With the log off, the only per-request cost is one `Option` check.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Method, Request, Uri, Version};
use switchyard_config::{AccessLogFormat, AccessLogPath};
use tokio::sync::mpsc;

/// Lines buffered between requests and the writer before new ones are dropped.
const QUEUE: usize = 8192;

/// The sink requests send finished lines to.
#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<Line>,
    dropped: metrics::Counter,
}

impl AccessLog {
    /// Opens the destination and starts the writer thread.
    pub fn start(config: &switchyard_config::AccessLog) -> Result<Arc<AccessLog>, String> {
        let out: Box<dyn Write + Send> = match &config.path {
            AccessLogPath::Stdout => Box::new(std::io::stdout()),
            AccessLogPath::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("access log {}: {e}", path.display()))?,
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let format = config.format;
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, format, out))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        let dropped = metrics::counter!("switchyard_access_log_dropped_total");
        dropped.absolute(0);
        Ok(Arc::new(AccessLog { tx, dropped }))
    }
}

/// One finished request.
#[derive(Debug)]
struct Line {
    time: SystemTime,
    client: SocketAddr,
    method: Method,
    uri: Uri,
    protocol: Version,
    host: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    status: u16,
    bytes: u64,
    duration: Duration,
    service: Option<Arc<str>>,
    version: Option<Arc<str>>,
    backend: Option<SocketAddr>,
}

/// What a line says about the request itself.
pub(crate) struct LoggedRequest {
    pub method: Method,
    pub uri: Uri,
    pub protocol: Version,
    pub host: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

/// A line started when its request arrived; [`Pending::send`] finishes and queues it once
/// the response has ended (the request's outcome is recorded in one place: `phases`).
#[derive(Debug)]
pub struct Pending {
    log: Arc<AccessLog>,
    arrived: Instant,
    line: Line,
}

/// Where a finished request went and how it ended, for its log line.
pub(crate) struct Finished {
    pub status: u16,
    pub bytes: u64,
    pub service: Option<Arc<str>>,
    pub version: Option<Arc<str>>,
    pub backend: Option<SocketAddr>,
}

impl Pending {
    /// A line for a request hyper parsed.
    pub(crate) fn of_request<B>(
        log: &Arc<AccessLog>,
        client: SocketAddr,
        req: &Request<B>,
        arrived: Instant,
    ) -> Pending {
        let h = req.headers();
        let request = LoggedRequest {
            method: req.method().clone(),
            uri: req.uri().clone(),
            protocol: req.version(),
            host: h
                .get(header::HOST)
                .cloned()
                .or_else(|| req.uri().authority().and_then(|a| a.as_str().parse().ok())),
            referer: h.get(header::REFERER).cloned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
        };
        Pending::new(log, client, request, arrived)
    }

    /// A line for a request described field by field (the fast path's raw head).
    pub(crate) fn new(
        log: &Arc<AccessLog>,
        client: SocketAddr,
        request: LoggedRequest,
        arrived: Instant,
    ) -> Pending {
        let LoggedRequest {
            method,
            uri,
            protocol,
            host,
            referer,
            user_agent,
        } = request;
        Pending {
            log: Arc::clone(log),
            arrived,
            line: Line {
                time: SystemTime::now(),
                client,
                method,
                uri,
                protocol,
                host,
                referer,
                user_agent,
                status: 0,
                bytes: 0,
                duration: Duration::ZERO,
                service: None,
                version: None,
                backend: None,
            },
        }
    }

    /// Finishes the line and queues it for the writer; never waits (a full queue drops the
    /// line and counts it).
    pub(crate) fn send(self, finished: Finished) {
        let Pending {
            log,
            arrived,
            mut line,
        } = self;
        line.status = finished.status;
        line.bytes = finished.bytes;
        line.service = finished.service;
        line.version = finished.version;
        line.backend = finished.backend;
        line.duration = arrived.elapsed();
        if log.tx.try_send(line).is_err() {
            log.dropped.increment(1);
        }
    }
}

fn write_lines(mut rx: mpsc::Receiver<Line>, format: AccessLogFormat, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut buf = String::with_capacity(512);
    while let Some(line) = rx.blocking_recv() {
        let mut next = Some(line);
        // Write everything already queued, then flush once.
        while let Some(line) = next {
            buf.clear();
            match format {
                AccessLogFormat::Json => json(&line, &mut buf),
                AccessLogFormat::Combined => combined(&line, &mut buf),
            }
            buf.push('\n');
            let _ = out.write_all(buf.as_bytes());
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

fn text(v: &Option<HeaderValue>) -> &str {
    v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A combined-format field: `-` when absent, like Apache and nginx.
fn dash(v: &str) -> &str {
    if v.is_empty() {
        "-"
    } else {
        v
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

fn path(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

fn json(l: &Line, out: &mut String) {
    use std::fmt::Write as _;
    let (y, mo, d, h, mi, s, ms) = civil(l.time);
    let _ = write!(
        out,
        "{{\"time\":\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z\",\"client\":\"{}\",\"host\":",
        l.client
    );
    json_str(text(&l.host), out);
    out.push_str(",\"method\":");
    json_str(l.method.as_str(), out);
    out.push_str(",\"path\":");
    json_str(path(&l.uri), out);
    let _ = write!(
        out,
        ",\"protocol\":\"{}\",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3},\"service\":",
        protocol(l.protocol),
        l.status,
        l.bytes,
        l.duration.as_secs_f64() * 1000.0
    );
    json_opt(l.service.as_deref(), out);
    out.push_str(",\"version\":");
    json_opt(l.version.as_deref(), out);
    out.push_str(",\"backend\":");
    match l.backend {
        Some(b) => {
            let _ = write!(out, "\"{b}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"user_agent\":");
    json_str(text(&l.user_agent), out);
    out.push('}');
}

fn json_opt(v: Option<&str>, out: &mut String) {
    match v {
        Some(v) => json_str(v, out),
        None => out.push_str("null"),
    }
}

fn json_str(v: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Apache/nginx "combined", plus the routing decision and duration at the end.
fn combined(l: &Line, out: &mut String) {
    use std::fmt::Write as _;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(l.time);
    let _ = write!(
        out,
        "{} - - [{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000] \"{} {} {}\" {} {} \"{}\" \"{}\" service={} version={} backend={} duration_ms={:.3}",
        l.client.ip(),
        MONTHS[(mo - 1) as usize],
        l.method,
        path(&l.uri).escape_default(),
        protocol(l.protocol),
        l.status,
        l.bytes,
        dash(text(&l.referer)).escape_default(),
        dash(text(&l.user_agent)).escape_default(),
        l.service.as_deref().unwrap_or("-"),
        l.version.as_deref().unwrap_or("-"),
        l.backend.map_or_else(|| "-".to_string(), |b| b.to_string()),
        l.duration.as_secs_f64() * 1000.0,
    );
}

/// UTC calendar fields of a time (days-to-civil, Howard Hinnant's algorithm).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        since.subsec_millis(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(civil(t), (2000, 2, 29, 0, 0, 0, 0));
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(civil(t), (2023, 11, 14, 22, 13, 20, 123));
    }

    #[test]
    fn json_escapes() {
        let mut s = String::new();
        json_str("a\"b\\c\u{1}", &mut s);
        assert_eq!(s, "\"a\\\"b\\\\c\\u0001\"");
    }
}
