//! The control API's body parser never panics: any bytes for any mutation give a command or
//! a 400 that says what is wrong (and, for a bad field, names it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_control::api::{parse_command, CommandKind};
use switchyard_control::commands::Command;
use switchyard_control::rollout::RolloutAction;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = match selector % 5 {
        0 => CommandKind::Weights,
        1 => CommandKind::Switch,
        2 => CommandKind::Rollback,
        3 => CommandKind::Undo,
        _ => CommandKind::Rollout(RolloutAction::Promote),
    };
    match parse_command(kind, body) {
        Ok(Command::SetWeights(w)) => {
            assert!(!w.is_empty(), "an empty weights object must be refused");
            assert!(w.values().all(|&v| v <= 1_000_000), "weight out of range: {w:?}");
        }
        Ok(Command::Switch { to }) => assert!(!to.is_empty()),
        Ok(_) => {}
        Err(e) => {
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{e:?}");
            assert!(!e.message().is_empty());
        }
    }
});
