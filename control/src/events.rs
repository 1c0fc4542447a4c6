//! Rollout events: what happened, in order, for people (`GET /events`, the dashboard) and
//! for machines (event webhooks).
//!
//! The controller appends events; readers get a shared snapshot (`ArcSwap`) so an API client
//! never waits on the controller. Each event has an increasing id so clients can ask for
//! `?since=ID` and never miss or repeat one.

use std::collections::VecDeque;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::EVENTS_KEPT;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    /// RFC 3339, UTC, with milliseconds.
    pub at: String,
    pub service: String,
    /// `rollout_started`, `step`, `analysis`, `paused`, `resumed`, `promoted`, `rolled_back`,
    /// `aborted`, `weights`, `switched`, `undo`, `config`, `gate`.
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub details: Value,
}

/// The recent events, newest last.
#[derive(Debug, Default)]
pub struct EventLog {
    events: VecDeque<Arc<Event>>,
    next_id: u64,
    published: Arc<ArcSwap<Vec<Arc<Event>>>>,
}

impl EventLog {
    pub fn new(loaded: Vec<Event>) -> EventLog {
        let next_id = loaded.last().map_or(1, |e| e.id + 1);
        let log = EventLog {
            events: loaded.into_iter().map(Arc::new).collect(),
            next_id,
            published: Arc::default(),
        };
        log.publish();
        log
    }

    /// Takes the events read from the store at start, unless events were recorded already
    /// (a controller restart keeps its own, so ids never repeat).
    pub fn restore(&mut self, loaded: Vec<Event>) {
        if self.events.is_empty() && self.next_id <= 1 {
            *self = EventLog {
                published: Arc::clone(&self.published),
                ..EventLog::new(loaded)
            };
            self.publish();
        }
    }

    /// The snapshot readers load.
    pub fn reader(&self) -> Arc<ArcSwap<Vec<Arc<Event>>>> {
        Arc::clone(&self.published)
    }

    /// Records an event and returns it (for persistence and webhooks).
    pub fn push(
        &mut self,
        service: &str,
        kind: &str,
        message: String,
        details: Value,
    ) -> Arc<Event> {
        let event = Arc::new(Event {
            id: self.next_id,
            at: crate::clock::rfc3339(crate::clock::now()),
            service: service.to_string(),
            kind: kind.to_string(),
            message,
            details,
        });
        self.next_id += 1;
        self.events.push_back(Arc::clone(&event));
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
        self.publish();
        event
    }

    /// Records an event another replica recorded: its own time and words, this log's id.
    pub fn push_remote(&mut self, event: Event) {
        let event = Arc::new(Event {
            id: self.next_id,
            ..event
        });
        self.next_id += 1;
        self.events.push_back(event);
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
        self.publish();
    }

    fn publish(&self) {
        self.published
            .store(Arc::new(self.events.iter().cloned().collect()));
    }
}

/// Events with an id above `since`, oldest first.
pub fn since(events: &[Arc<Event>], since: u64) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| e.id > since)
        .map(|e| &**e)
        .collect()
}
