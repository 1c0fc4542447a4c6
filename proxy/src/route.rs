//! Which service a request belongs to: host first, then path.
//!
//! SPEC §4.1: an exact host beats a wildcard host beats a service with no host; among those,
//! the longest `path_prefix` wins; a service with no `match` at all takes what nothing else
//! does. The matcher is built once per routing table. Exact hosts live in a hash map, so the
//! lookup cost does not grow with the number of services; a request allocates nothing (hosts
//! are lower-cased into a stack buffer). It matches bytes, as the fast path holds them: no
//! UTF-8 check per request (configured hosts and prefixes are UTF-8, so only equal bytes
//! match), and a table whose services name no host never looks at the `Host` header.

use std::collections::HashMap;

/// Longest-first list of `(path prefix, service index)`.
#[derive(Debug, Default, Clone)]
struct PrefixList(Vec<(Box<[u8]>, usize)>);

impl PrefixList {
    fn push(&mut self, prefix: &str, service: usize) {
        self.0.push((prefix.as_bytes().into(), service));
    }

    fn finish(&mut self) {
        // Stable sort: for equal prefixes the first service in the file wins.
        self.0.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    fn find(&self, path: &[u8]) -> Option<usize> {
        self.0
            .iter()
            .find(|(p, _)| path.starts_with(p))
            .map(|&(_, s)| s)
    }
}

/// A compiled host/path matcher over the services of one routing table.
#[derive(Debug, Default, Clone)]
pub struct ServiceMatcher {
    exact: HashMap<Box<[u8]>, PrefixList>,
    /// `(".example.com", prefixes)`, longest suffix first (most specific wildcard wins).
    wildcard: Vec<(Box<[u8]>, PrefixList)>,
    any_host: PrefixList,
    default: Option<usize>,
}

/// What a service matches on, as the matcher needs it.
pub struct MatchRule<'a> {
    /// Lower-case exact hosts and `*.suffix` wildcards; empty = any host.
    pub hosts: &'a [String],
    pub path_prefix: &'a str,
}

impl ServiceMatcher {
    /// Builds a matcher; `rules[i]` is service i's rule, `None` for the default service.
    pub fn new<'a>(rules: impl IntoIterator<Item = Option<MatchRule<'a>>>) -> ServiceMatcher {
        let mut m = ServiceMatcher::default();
        for (service, rule) in rules.into_iter().enumerate() {
            let Some(rule) = rule else {
                m.default.get_or_insert(service);
                continue;
            };
            if rule.hosts.is_empty() {
                m.any_host.push(rule.path_prefix, service);
            }
            for host in rule.hosts {
                if let Some(suffix) = host.strip_prefix('*') {
                    let suffix = suffix.as_bytes();
                    match m.wildcard.iter_mut().find(|(s, _)| **s == *suffix) {
                        Some((_, list)) => list.push(rule.path_prefix, service),
                        None => {
                            let mut list = PrefixList::default();
                            list.push(rule.path_prefix, service);
                            m.wildcard.push((suffix.into(), list));
                        }
                    }
                } else {
                    m.exact
                        .entry(host.as_bytes().into())
                        .or_default()
                        .push(rule.path_prefix, service);
                }
            }
        }
        m.exact.values_mut().for_each(PrefixList::finish);
        m.wildcard.iter_mut().for_each(|(_, l)| l.finish());
        m.wildcard.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        m.any_host.finish();
        m
    }

    /// Whether any service matches on the host: if not, [`ServiceMatcher::find`] ignores it
    /// (and the caller need not read it).
    pub fn by_host(&self) -> bool {
        !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// The service for a request. `host` may carry a port and any letter case.
    pub fn find(&self, host: Option<&[u8]>, path: &[u8]) -> Option<usize> {
        let mut buf = [0u8; 256];
        if let Some(host) = host.and_then(|h| normalize_host(h, &mut buf)) {
            if let Some(s) = self.exact.get(host).and_then(|l| l.find(path)) {
                return Some(s);
            }
            for (suffix, list) in &self.wildcard {
                // `*.example.com` needs at least one label before the suffix.
                if host.len() > suffix.len() && host.ends_with(suffix) {
                    if let Some(s) = list.find(path) {
                        return Some(s);
                    }
                }
            }
        }
        self.any_host.find(path).or(self.default)
    }
}

/// Strips the port and a trailing dot, lower-cases into `buf`; `None` if it cannot be a host.
fn normalize_host<'b>(host: &[u8], buf: &'b mut [u8; 256]) -> Option<&'b [u8]> {
    let host = if host.starts_with(b"[") {
        // IPv6 literal: keep the brackets, drop the port.
        &host[..=host.iter().position(|&b| b == b']')?]
    } else {
        host.iter()
            .rposition(|&b| b == b':')
            .map_or(host, |colon| &host[..colon])
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > buf.len() {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matcher as routing calls it, over text.
    fn find(m: &ServiceMatcher, host: Option<&str>, path: &str) -> Option<usize> {
        m.find(host.map(str::as_bytes), path.as_bytes())
    }

    fn matcher(rules: &[Option<(&[&str], &str)>]) -> ServiceMatcher {
        let owned: Vec<Option<(Vec<String>, String)>> = rules
            .iter()
            .map(|r| r.map(|(h, p)| (h.iter().map(|s| s.to_string()).collect(), p.to_string())))
            .collect();
        ServiceMatcher::new(owned.iter().map(|r| {
            r.as_ref().map(|(hosts, prefix)| MatchRule {
                hosts,
                path_prefix: prefix,
            })
        }))
    }

    #[test]
    fn exact_beats_wildcard_beats_any_host() {
        let m = matcher(&[
            Some((&[], "/")),
            Some((&["*.example.com"], "/")),
            Some((&["api.example.com"], "/")),
        ]);
        assert_eq!(find(&m, Some("api.example.com"), "/x"), Some(2));
        assert_eq!(find(&m, Some("API.Example.com:8080"), "/x"), Some(2));
        assert_eq!(find(&m, Some("www.example.com"), "/x"), Some(1));
        assert_eq!(find(&m, Some("a.b.example.com"), "/x"), Some(1));
        assert_eq!(find(&m, Some("example.com"), "/x"), Some(0));
        assert_eq!(find(&m, None, "/x"), Some(0));
    }

    #[test]
    fn longest_prefix_wins_and_falls_through_hosts() {
        let m = matcher(&[
            Some((&["api.example.com"], "/v2")),
            Some((&["api.example.com"], "/")),
            Some((&["api.example.com"], "/v2/admin")),
            Some((&[], "/static")),
        ]);
        assert_eq!(find(&m, Some("api.example.com"), "/v2/admin/x"), Some(2));
        assert_eq!(find(&m, Some("api.example.com"), "/v2/x"), Some(0));
        assert_eq!(find(&m, Some("api.example.com"), "/v1"), Some(1));
        assert_eq!(find(&m, Some("other"), "/static/a.css"), Some(3));
        assert_eq!(find(&m, Some("other"), "/x"), None);
    }

    #[test]
    fn only_a_table_with_host_rules_reads_the_host() {
        assert!(!matcher(&[Some((&[], "/")), None]).by_host());
        assert!(matcher(&[Some((&["a.com"], "/")), None]).by_host());
        assert!(matcher(&[Some((&["*.a.com"], "/"))]).by_host());
        // Bytes that are not UTF-8 match no configured host, and fall through to the rest.
        let m = matcher(&[Some((&["a.com"], "/")), Some((&[], "/"))]);
        assert_eq!(m.find(Some(b"\xe9.a.com"), b"/"), Some(1));
    }

    #[test]
    fn default_service_takes_the_rest() {
        let m = matcher(&[Some((&["a.com"], "/")), None]);
        assert_eq!(find(&m, Some("a.com"), "/"), Some(0));
        assert_eq!(find(&m, Some("b.com"), "/"), Some(1));
        assert_eq!(find(&m, None, "/"), Some(1));
    }

    #[test]
    fn hosts_are_normalized() {
        let mut buf = [0u8; 256];
        let mut norm = |h: &str| normalize_host(h.as_bytes(), &mut buf).map(<[u8]>::to_vec);
        assert_eq!(norm("Api.COM:80").as_deref(), Some(&b"api.com"[..]));
        assert_eq!(norm("api.com.").as_deref(), Some(&b"api.com"[..]));
        assert_eq!(norm("[::1]:8080").as_deref(), Some(&b"[::1]"[..]));
        assert_eq!(norm(""), None);
    }
}
