//! Durations as operators write them: `500ms`, `30s`, `5m`, `1h`.
//!
//! One parser for the config file and the CLI (`--drain-timeout`), so both accept the same
//! spellings and say the same thing about a wrong one. Each part is a whole number followed by
//! a unit; parts may be combined (`1m30s`). A bare number is refused rather than guessed: `30`
//! could mean seconds or milliseconds, and guessing wrong is a silent outage.

use std::time::Duration;

const HINT: &str = "use e.g. 500ms, 30s, 5m, 1h";

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h` or `1m30s`. Zero (`0s`) is accepted;
/// callers for which zero makes no sense reject it themselves.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let not_understood = || format!("duration {s:?} not understood ({HINT})");
    if s.is_empty() {
        return Err(format!("duration is empty ({HINT})"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("duration {s:?} has no unit ({HINT})"));
    }

    let too_large = || format!("duration {s:?} is too large");
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if digits.is_empty() {
            return Err(not_understood());
        }
        let n: u64 = digits.parse().map_err(|_| too_large())?;
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_large)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_large)?),
            _ => return Err(not_understood()),
        };
        total = total.checked_add(part).ok_or_else(too_large)?;
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn accepts_combined_parts() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h5m"), Ok(Duration::from_secs(3900)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_what_it_cannot_read_with_a_hint() {
        assert_eq!(
            parse_duration("5 min").unwrap_err(),
            r#"duration "5 min" not understood (use e.g. 500ms, 30s, 5m, 1h)"#
        );
        for bad in ["1.5s", "-5s", "s", "5d", "5sec", " 5s", "ms5"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not understood"), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_a_bare_number() {
        assert_eq!(
            parse_duration("30").unwrap_err(),
            r#"duration "30" has no unit (use e.g. 500ms, 30s, 5m, 1h)"#
        );
        assert!(parse_duration("").unwrap_err().contains("empty"));
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_duration("99999999999999999999s")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("18446744073709551615h")
            .unwrap_err()
            .contains("too large"));
    }
}
