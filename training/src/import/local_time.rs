//! Local wall-clock times of the sources: the parser the adapters share; the daylight-saving rules
//! live in `parkcast-localtime` (one home for local time).

use chrono::{NaiveDate, NaiveDateTime};
pub(crate) use parkcast_localtime::{DstCounts, resolve_local_time};

/// Parses `YYYY-MM-DD HH:MM[:SS[.fff]]` (a `T` may replace the space) without allocating; the
/// Málaga file has 1.6 million of these.
pub(crate) fn parse_naive_datetime(text: &str) -> Option<NaiveDateTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 16
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b' ' | b'T')
        || bytes[13] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes[range].iter().try_fold(0_u32, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)?;
    let (hour, minute) = (number(11..13)?, number(14..16)?);
    let rest = &bytes[16..];
    let (second, nanosecond) = match rest {
        [] => (0, 0),
        [b':', seconds @ ..] if seconds.len() >= 2 => {
            let second = number(17..19)?;
            let fraction = &seconds[2..];
            let nanosecond = match fraction {
                [] => 0,
                [b'.', digits @ ..] if !digits.is_empty() && digits.len() <= 9 => {
                    let value = number(20..20 + digits.len())?;
                    value * 10_u32.pow(9 - digits.len() as u32)
                }
                _ => return None,
            };
            (second, nanosecond)
        }
        _ => return None,
    };
    date.and_hms_nano_opt(hour, minute, second, nanosecond)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn local(text: &str) -> NaiveDateTime {
        parse_naive_datetime(text).expect("test times should parse")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        local(text).and_utc()
    }

    #[test]
    fn naive_times_parse_with_optional_seconds_and_fractions() {
        assert_eq!(
            local("2016-10-04 07:59:42"),
            utc("2016-10-04 07:59:42").naive_utc()
        );
        let expected = NaiveDate::from_ymd_opt(2023, 3, 23)
            .and_then(|date| date.and_hms_milli_opt(7, 46, 0, 250));
        assert_eq!(parse_naive_datetime("2023-03-23T07:46:00.25"), expected);
        assert_eq!(
            parse_naive_datetime("2023-03-23 07:46").map(|time| time.and_utc().timestamp() % 60),
            Some(0)
        );
        for bad in [
            "2023-03-23",
            "2023-3-23 07:46",
            "2023-03-23 07:46:5",
            "2023-02-30 07:46",
            "2023-03-23 25:00",
            "x",
        ] {
            assert_eq!(parse_naive_datetime(bad), None, "{bad}");
        }
    }
}
