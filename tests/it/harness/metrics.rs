//! Reading the Prometheus text exposition of `GET /metrics`.

use std::collections::BTreeMap;

/// One sample line of the Prometheus text format: `name{k="v",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The label names, sorted.
    pub fn label_names(&self) -> Vec<&str> {
        self.labels.keys().map(String::as_str).collect()
    }

    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Parses a Prometheus text exposition (`GET /metrics`) into samples, skipping comments.
/// Panics on a line it cannot read: the exporter must produce valid text.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        fn fail(line: &str) -> ! {
            panic!("unreadable metrics line: {line:?}")
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => fail(line),
        };
        let mut labels = BTreeMap::new();
        let value_text = if let Some(body) = rest.strip_prefix('{') {
            // Label values may contain escaped quotes, '}' and ','; walk them char by char.
            let mut chars = body.char_indices().peekable();
            let end = loop {
                while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
                match chars.peek() {
                    Some((i, '}')) => break *i,
                    None => fail(line),
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    fail(line);
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => fail(line),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => fail(line),
                    }
                }
                labels.insert(key.trim().to_string(), value);
            };
            &body[end + 1..]
        } else {
            rest
        };
        let value_text = value_text
            .split_whitespace()
            .next()
            .unwrap_or_else(|| fail(line));

        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| fail(line)),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// `# TYPE name kind` lines of a Prometheus text exposition, by metric name.
pub fn metric_types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}
