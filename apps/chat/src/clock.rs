//! Wall-clock time as IRC wants it: IRCv3 `server-time` stamps
//! (`2024-05-01T12:00:00.000Z`) and Unix seconds for numerics such as 333.

use std::time::{SystemTime, UNIX_EPOCH};

use shardline::time::{civil_from_days, days_from_civil};

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    now_millis() / 1000
}

/// Formats Unix milliseconds as an ISO 8601 UTC timestamp with milliseconds, the
/// format `server-time` requires.
pub fn format_server_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses an ISO 8601 UTC timestamp as `server-time` writes it
/// (`YYYY-MM-DDThh:mm:ss.sssZ`; the fraction may have 0 to 9 digits, only
/// milliseconds count) into Unix milliseconds. `None` if it is not one, or
/// before 1970.
pub fn parse_server_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b.last() != Some(&b'Z') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = &b[19..b.len() - 1];
    let ms = match frac.split_first() {
        None => 0,
        Some((b'.', digits)) if (1..=9).contains(&digits.len()) => {
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            digits
                .iter()
                .chain(std::iter::repeat(&b'0'))
                .take(3)
                .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
        }
        _ => return None,
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) {
        return None;
    }
    if d == 0 || d > month_days[(mo - 1) as usize] || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + sec;
    Some(secs * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_server_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_server_time(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_server_time(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_what_it_formats() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(parse_server_time(&format_server_time(ms)), Some(ms));
        }
        let mut ms = 1;
        while ms < 253_402_300_799_000 {
            assert_eq!(parse_server_time(&format_server_time(ms)), Some(ms));
            ms = ms * 7 + 13;
        }
        assert_eq!(
            parse_server_time("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_server_time("2023-11-14T22:13:20.1Z"),
            Some(1_700_000_000_100)
        );
        assert_eq!(
            parse_server_time("2023-11-14T22:13:20.123456Z"),
            Some(1_700_000_000_123)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20.123",
            "2023-11-14 22:13:20.123Z",
            "2023-13-14T22:13:20.123Z",
            "2023-02-29T22:13:20.123Z",
            "2023-11-14T24:13:20.123Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567890Z",
            "1969-12-31T23:59:59.999Z",
            "+023-11-14T22:13:20.123Z",
            "2023-11-14T22:13:2x.123Z",
            "2023-11-14T22:13:20.12aZ",
            "é023-11-14T22:13:20.123Z",
        ] {
            assert_eq!(parse_server_time(bad), None, "{bad}");
        }
    }
}
