//! Time as İYS speaks it: Turkey local time (fixed UTC+3 since September 2016), the İYS text
//! format `YYYY-MM-DD HH:mm:ss`, and a `Clock` so deadline and staleness logic is tested at
//! exact boundaries without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};

/// Turkey local wall-clock time. Turkey has kept UTC+3 all year since 2016-09-07, so a fixed
/// offset is exact for every date iysgate deals with (İYS accepts nothing before 2015-05-01,
/// and events from 2015–2016 only matter for ordering, where a one-hour DST skew between two
/// events of the same recipient is immaterial).
pub type TurkeyTime = NaiveDateTime;

const TURKEY_OFFSET_SECONDS: i64 = 3 * 3600;

/// İYS date format for consentDate and creationDate.
pub const IYS_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The index stores consent dates as minutes since this instant (Turkey time).
fn minute_epoch() -> TurkeyTime {
    NaiveDate::from_ymd_opt(2015, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("2015-01-01 00:00:00 is a valid date-time")
}

pub fn to_turkey(utc: DateTime<Utc>) -> TurkeyTime {
    utc.naive_utc() + Duration::seconds(TURKEY_OFFSET_SECONDS)
}

pub fn from_turkey(local: TurkeyTime) -> DateTime<Utc> {
    (local - Duration::seconds(TURKEY_OFFSET_SECONDS)).and_utc()
}

/// Parses İYS's `YYYY-MM-DD HH:mm:ss`.
pub fn parse_iys(text: &str) -> Option<TurkeyTime> {
    // Hand-parsed: this runs for every record of a cold start, and chrono's format-string
    // parser is several times slower. Exactly `YYYY-MM-DD HH:mm:ss`, nothing else.
    let b = text.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)
}

/// `YYYY-MM-DD HH:mm:ss` (İYS's format), written by hand: a check answer carries a date, and
/// chrono's format-string machinery costs several times more per call (years outside
/// 0..=9999, which İYS never sends, go through chrono).
pub fn format_iys(t: TurkeyTime) -> String {
    format_fixed(t, true)
}

/// `YYYY-MM-DD HH:mm` (the minute precision a Check answer gives).
pub fn format_minute(t: TurkeyTime) -> String {
    format_fixed(t, false)
}

fn format_fixed(t: TurkeyTime, seconds: bool) -> String {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t
            .format(if seconds {
                IYS_FORMAT
            } else {
                "%Y-%m-%d %H:%M"
            })
            .to_string();
    }
    let mut b = *b"0000-00-00 00:00:00";
    let put = |b: &mut [u8; 19], at: usize, width: usize, mut n: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(&mut b, 0, 4, year.unsigned_abs());
    put(&mut b, 5, 2, t.month());
    put(&mut b, 8, 2, t.day());
    put(&mut b, 11, 2, t.hour());
    put(&mut b, 14, 2, t.minute());
    put(&mut b, 17, 2, t.second());
    let len = if seconds { 19 } else { 16 };
    // ASCII digits and separators only.
    String::from_utf8_lossy(&b[..len]).into_owned()
}

/// Minutes since 2015-01-01 00:00 Turkey time, saturating at 0 below and at 24 bits above
/// (the index's field width; good until 2046).
pub fn to_minute(t: TurkeyTime) -> u32 {
    let minutes = (t - minute_epoch()).num_minutes();
    minutes.clamp(0, (1 << 24) - 1) as u32
}

pub fn from_minute(minute: u32) -> TurkeyTime {
    minute_epoch() + Duration::minutes(i64::from(minute))
}

/// Where "now" comes from. Production uses `clock::SystemClock`; tests use `ManualClock`.
pub trait Clock: Send + Sync + 'static {
    fn now_utc(&self) -> DateTime<Utc>;

    fn now_turkey(&self) -> TurkeyTime {
        to_turkey(self.now_utc())
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            micros: AtomicI64::new(start.timestamp_micros()),
        }
    }

    pub fn at_turkey(local: TurkeyTime) -> Self {
        Self::new(from_turkey(local))
    }

    pub fn set(&self, t: DateTime<Utc>) {
        self.micros.store(t.timestamp_micros(), Ordering::SeqCst);
    }

    pub fn set_turkey(&self, local: TurkeyTime) {
        self.set(from_turkey(local));
    }

    pub fn advance(&self, by: Duration) {
        let micros = by
            .num_microseconds()
            .expect("test durations fit in i64 microseconds");
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.micros.load(Ordering::SeqCst))
            .expect("a ManualClock only holds times it was given")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_formatting_is_chronos_formatting() {
        let start = NaiveDate::from_ymd_opt(2015, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        // Every day of 2015-2040 at a different time of day, and the year's edges.
        for day in 0..(26 * 366) {
            let t = start + Duration::days(day) + Duration::seconds((day * 7_919) % 86_400);
            assert_eq!(format_iys(t), t.format(IYS_FORMAT).to_string());
            assert_eq!(format_minute(t), t.format("%Y-%m-%d %H:%M").to_string());
        }
        let odd = NaiveDate::from_ymd_opt(12_345, 6, 7)
            .unwrap()
            .and_hms_opt(8, 9, 10)
            .unwrap();
        assert_eq!(format_iys(odd), odd.format(IYS_FORMAT).to_string());
        assert_eq!(format_iys(start), "2015-01-01 00:00:00");
    }

    #[test]
    fn turkey_is_utc_plus_three() {
        let utc = DateTime::parse_from_rfc3339("2026-05-20T21:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(format_iys(to_turkey(utc)), "2026-05-21 00:30:00");
        assert_eq!(from_turkey(to_turkey(utc)), utc);
    }

    #[test]
    fn minutes_round_trip_and_saturate() {
        let t = parse_iys("2026-11-28 17:45:00").unwrap();
        assert_eq!(from_minute(to_minute(t)), t);
        assert_eq!(to_minute(parse_iys("2014-01-01 00:00:00").unwrap()), 0);
        assert_eq!(
            to_minute(parse_iys("2099-01-01 00:00:00").unwrap()),
            (1 << 24) - 1
        );
    }

    #[test]
    fn iys_format_is_strict() {
        assert!(parse_iys("2026-11-28 17:45:00").is_some());
        assert!(parse_iys("2026-11-28T17:45:00").is_none());
        assert!(parse_iys("2026-02-30 10:00:00").is_none());
        assert!(parse_iys("2026-11-28 24:00:00").is_none());
        assert!(parse_iys("2026-11-28 7:45:00").is_none());
        assert!(parse_iys("2026-11-28 17:45:0a").is_none());
        assert!(parse_iys("+026-11-28 17:45:00").is_none());
        assert_eq!(
            format_iys(parse_iys("2015-05-01 00:00:00").unwrap()),
            "2015-05-01 00:00:00"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_turkey(parse_iys("2026-01-01 12:00:00").unwrap());
        assert_eq!(format_iys(clock.now_turkey()), "2026-01-01 12:00:00");
        clock.advance(Duration::seconds(61));
        assert_eq!(format_iys(clock.now_turkey()), "2026-01-01 12:01:01");
    }
}
