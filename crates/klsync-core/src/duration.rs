//! Durations on the command line and in `klsync.yaml`: `90s`, `1500ms`, `2m`, `2h`, `1d`, or a bare
//! number of seconds. One parser for every flag and setting that takes a duration (`apply
//! --max-age`, `--lock-timeout`, `query --statement-timeout`, `klaviyo.request_timeout`), its
//! inverse, and the rounded forms for messages and estimates.

use std::time::Duration;

/// Parses a whole number with an optional unit: `ms`, `s` (the default), `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number.parse().map_err(|_| {
        format!("{text:?}: expected a whole number with an optional unit: ms, s, m, h or d")
    })?;
    let seconds = |per_unit: u64| Duration::from_secs(value.saturating_mul(per_unit));
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        other => Err(format!(
            "{text:?}: unknown unit {other:?}; use ms, s, m, h or d"
        )),
    }
}

/// `duration` in whole days, hours, minutes and seconds, largest first.
fn units(duration: Duration) -> [(u64, &'static str); 4] {
    let total = duration.as_secs();
    [
        (total / 86_400, "d"),
        (total % 86_400 / 3600, "h"),
        (total % 3600 / 60, "m"),
        (total % 60, "s"),
    ]
}

/// `1h 5m`, `42s`, `3d 2h`: a duration for messages, every unit that is not zero.
pub fn human_duration(duration: Duration) -> String {
    let parts: Vec<String> = units(duration)
        .into_iter()
        .filter(|(value, _)| *value > 0)
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

/// An estimate for humans, its two largest units from the first that is not zero: `4s`,
/// `1m 1s`, `2h 3m`, `1d 0h`.
pub fn format_estimate(duration: Duration) -> String {
    let units = units(duration);
    match units.iter().position(|(value, _)| *value > 0) {
        Some(first) if first + 1 < units.len() => {
            let ((high, high_unit), (low, low_unit)) = (units[first], units[first + 1]);
            format!("{high}{high_unit} {low}{low_unit}")
        }
        _ => format!("{}s", units[3].0),
    }
}

/// The inverse of [`parse_duration`]: the largest unit that writes `duration` exactly (`500ms`,
/// `20s`, `90s`, `6h`), so settings and messages show a value as the user would write it.
/// Sub-millisecond parts are dropped.
pub fn format_exact(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 != 0 {
        return format!("{millis}ms");
    }
    let seconds = millis / 1000;
    [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(per_unit, _)| seconds != 0 && seconds % per_unit == 0)
        .map_or_else(
            || format!("{seconds}s"),
            |(per_unit, unit)| format!("{}{unit}", seconds / per_unit),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(" 1d "), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn exact_format_round_trips_through_the_parser() {
        for (text, duration) in [
            ("500ms", Duration::from_millis(500)),
            ("1500ms", Duration::from_millis(1500)),
            ("20s", Duration::from_secs(20)),
            ("90s", Duration::from_secs(90)),
            ("2m", Duration::from_secs(120)),
            ("6h", Duration::from_secs(6 * 3600)),
            ("1d", Duration::from_secs(86_400)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(format_exact(duration), text);
            assert_eq!(parse_duration(text), Ok(duration));
        }
    }

    #[test]
    fn rejects_unknown_units_and_missing_numbers() {
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(Duration::from_secs(0)), "0s");
        assert_eq!(human_duration(Duration::from_secs(3_900)), "1h 5m");
        assert_eq!(human_duration(Duration::from_secs(90_061)), "1d 1h 1m 1s");
    }

    #[test]
    fn estimates_show_the_two_largest_units() {
        assert_eq!(format_estimate(Duration::ZERO), "0s");
        assert_eq!(format_estimate(Duration::from_secs(4)), "4s");
        assert_eq!(format_estimate(Duration::from_secs(60)), "1m 0s");
        assert_eq!(format_estimate(Duration::from_secs(61)), "1m 1s");
        assert_eq!(format_estimate(Duration::from_secs(3720)), "1h 2m");
        assert_eq!(format_estimate(Duration::from_secs(3601)), "1h 0m");
        assert_eq!(format_estimate(Duration::from_secs(90_000)), "1d 1h");
        assert_eq!(format_estimate(Duration::from_secs(90_061)), "1d 1h");
    }
}
