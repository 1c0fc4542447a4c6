//! Where everything lives under the fleet's prefix (docs/FLEET.md draws the same table).
//!
//! ```text
//! PREFIX/state/<svc>                    service state: weights, rollout, rolled-back releases
//!                                       (its mod_revision is the service's version: every
//!                                       change is a txn on "mod_revision == what I read")
//! PREFIX/history/<svc>/<id:020>         one revision each, written in the same txn, never
//!                                       rewritten: compaction drops old *versions* of keys,
//!                                       and these keys have only one, so history survives it
//! PREFIX/events/<replica>/<seq:020>     recent events, the newest 1000 per replica
//! PREFIX/replicas/<replica>             heartbeat: admin address, applied revisions, topology
//!                                       hashes (under the replica's lease)
//! PREFIX/windows/<replica>              telemetry of progressing rollouts (under the lease)
//! PREFIX/election/<lease id>            etcd's election API (v3election), keys under leases
//! ```
//!
//! Ids are zero-padded so that etcd's byte order is numeric order. The watch covers
//! `events/` up to `state/` (events, history, replicas, state — `election/` and the bulky
//! `windows/` sort outside it).

/// The keys of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn state(&self, service: &str) -> String {
        format!("{}/state/{service}", self.prefix)
    }

    pub fn states(&self) -> String {
        format!("{}/state/", self.prefix)
    }

    pub fn history(&self, service: &str, id: u64) -> String {
        format!("{}/history/{service}/{id:020}", self.prefix)
    }

    pub fn histories(&self, service: &str) -> String {
        format!("{}/history/{service}/", self.prefix)
    }

    pub fn event(&self, replica: &str, seq: u64) -> String {
        format!("{}/events/{replica}/{seq:020}", self.prefix)
    }

    pub fn events(&self) -> String {
        format!("{}/events/", self.prefix)
    }

    pub fn replica(&self, replica: &str) -> String {
        format!("{}/replicas/{replica}", self.prefix)
    }

    pub fn replicas(&self) -> String {
        format!("{}/replicas/", self.prefix)
    }

    pub fn window(&self, replica: &str) -> String {
        format!("{}/windows/{replica}", self.prefix)
    }

    pub fn windows(&self) -> String {
        format!("{}/windows/", self.prefix)
    }

    pub fn election(&self) -> String {
        format!("{}/election", self.prefix)
    }

    /// The watched range: `[events/, state0)`.
    pub fn watched(&self) -> (String, String) {
        (self.events(), format!("{}/state0", self.prefix))
    }

    /// What a watched key is.
    pub fn parse<'k>(&self, key: &'k str) -> Option<Key<'k>> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let (kind, rest) = rest.split_once('/')?;
        Some(match kind {
            "state" if !rest.is_empty() => Key::State(rest),
            "history" => {
                let (service, id) = rest.rsplit_once('/')?;
                Key::History(service, id.parse().ok()?)
            }
            "events" => {
                let (replica, seq) = rest.rsplit_once('/')?;
                Key::Event(replica, seq.parse().ok()?)
            }
            "replicas" => Key::Replica(rest),
            "windows" => Key::Window(rest),
            _ => return None,
        })
    }
}

/// A key under the prefix, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'k> {
    State(&'k str),
    History(&'k str, u64),
    Event(&'k str, u64),
    Replica(&'k str),
    Window(&'k str),
}

/// The end of a prefix range (etcd's "prefix end": the last byte plus one).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_numerically() {
        let k = Keys::new("/switchyard/prod");
        assert_eq!(k.state("api"), "/switchyard/prod/state/api");
        assert_eq!(k.parse(&k.history("api", 7)), Some(Key::History("api", 7)));
        assert_eq!(k.parse(&k.state("api")), Some(Key::State("api")));
        assert_eq!(
            k.parse(&k.event("edge-1", 3)),
            Some(Key::Event("edge-1", 3))
        );
        assert!(k.history("api", 9) < k.history("api", 10));
        let (from, to) = k.watched();
        for key in [
            k.event("a", 1),
            k.history("a", 1),
            k.replica("a"),
            k.state("a"),
        ] {
            assert!(from <= key && key < to, "{key}");
        }
        for key in [k.window("a"), format!("{}/x", k.election())] {
            assert!(!(from <= key && key < to), "{key}");
        }
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    }
}
