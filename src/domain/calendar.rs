//! Turkey's official holidays as data, and the two business-day calendars iysgate counts with.
//!
//! The holiday list is a CSV file (`date,weekday,kind,name_tr,basis`; `kind` is `FULL` or
//! `HALF_FROM_13:00`). A default covering 2020–2030 is embedded in the binary
//! ([`BusinessCalendar::embedded`]); a deployment adds next year's dates or a new holiday by
//! pointing configuration at its own file (`app::load_calendar`), without a rebuild.
//! See `BUSINESS-DAYS.md` for the rules and their sources.
//!
//! Two calendars are built on the same data:
//!
//! * the **strict calendar** ([`BusinessCalendar::registration_deadline`]) for iysgate's own legal
//!   duties (push a collected ONAY/RET to İYS, act on a rejection): day 0 is the capture date;
//!   every following day counts except Sundays and FULL holidays (Saturdays and half days count);
//!   the deadline is the end of the 3rd counted day, or 13:00 when that day is a half day. This
//!   is the earliest defensible reading of "3 iş günü";
//! * the **display calendar** ([`BusinessCalendar::is_display_business_day`],
//!   [`BusinessCalendar::display_business_days_between`]) for reports and the panel: Monday to
//!   Friday minus FULL holidays. Whatever shows such a figure should say which calendar it uses.
//!
//! # Time model
//!
//! All times are Turkey local time as [`NaiveDateTime`]. Turkey has been on fixed UTC+3, with no
//! daylight saving, since September 2016, so callers convert with a fixed offset, e.g.
//! `utc.naive_utc() + TimeDelta::hours(3)` or `FixedOffset::east_opt(3 * 3600)`; no time-zone
//! database is needed. (Before September 2016 Turkey kept summer time, so that conversion does
//! not hold for older timestamps.)
//!
//! # Dates outside the data
//!
//! A date whose year is outside [`BusinessCalendar::first_year`]..=[`BusinessCalendar::last_year`]
//! has no known holidays: the strict calendar skips only Sundays there, so the deadline can fall
//! on an earlier date than the true one, never a later one. And since an unlisted day might be a
//! half day, a deadline that falls on such a day closes at 13:00:00 rather than 23:59:59. Together
//! this gives the earliest deadline any holiday data could produce: the strict, safe side.
//! [`BusinessCalendar::covers`] lets the caller warn at start-up when today (or next year) is not
//! covered.
//!
//! # I/O
//!
//! This module does no I/O: the file is read by `app::load_calendar`.
//! Lookups do not allocate: the holidays are a sorted `Vec` searched by binary search.
//!
//! Over 600 lines on purpose: the calendar rules and their boundary tests, most of the file.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Weekday};

/// The holiday list built into the binary, used when no file is configured.
const EMBEDDED_CSV: &str = include_str!("../../data/tr-holidays.csv");

/// How many counted days the strict calendar gives ("3 iş günü").
const COUNTED_DAYS: u32 = 3;

/// The last second of a whole counted day; the deadline is inclusive.
const END_OF_DAY: NaiveTime =
    NaiveTime::from_hms_opt(23, 59, 59).expect("23:59:59 is a valid time");

/// When a half day's holiday begins; the deadline on a half day is inclusive of this second.
const HALF_DAY_CLOSE: NaiveTime =
    NaiveTime::from_hms_opt(13, 0, 0).expect("13:00:00 is a valid time");

/// The CSV spelling of [`DayKind::FullHoliday`].
const KIND_FULL: &str = "FULL";
/// The CSV spelling of [`DayKind::HalfFrom13`].
const KIND_HALF: &str = "HALF_FROM_13:00";

/// What the holiday data says about one date. Weekends are not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayKind {
    /// Not listed: an ordinary day (which may still be a Saturday or Sunday).
    Working,
    /// Holiday from 13:00 (`HALF_FROM_13:00`): the arife before a bayram, and 28 October.
    HalfFrom13,
    /// Holiday all day (`FULL`).
    FullHoliday,
}

/// Official holidays by date, and the strict and display business-day calendars over them.
///
/// Cheap to query (binary search, no allocation); clone it or share it behind an `Arc`.
#[derive(Clone)]
pub struct BusinessCalendar {
    /// Listed dates, sorted and unique. Never holds [`DayKind::Working`].
    days: Vec<(NaiveDate, DayKind)>,
    /// Data rows read, before holidays sharing a date were merged.
    rows: usize,
    first_year: i32,
    last_year: i32,
}

/// Why a holiday list could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// The file could not be read (or is not UTF-8).
    #[error("cannot read holiday calendar {path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, #[source] std::io::Error),
    /// A line of the CSV is malformed. `line` is 1-based and counts the header; `field` is the
    /// column at fault (`header`, `row`, `date`, `weekday`, `kind` or `name_tr`).
    #[error("holiday calendar line {line}, field `{field}`: {reason}")]
    Line {
        line: usize,
        field: &'static str,
        reason: String,
    },
    /// The CSV has no header or no data rows.
    #[error("holiday calendar has no data rows")]
    Empty,
}

impl BusinessCalendar {
    /// The holiday list embedded in the binary (2020–2030 as shipped).
    ///
    /// # Panics
    ///
    /// Never: the embedded CSV is fixed at build time and a unit test proves it parses.
    #[must_use]
    pub fn embedded() -> Self {
        Self::from_csv(EMBEDDED_CSV).expect("the embedded holiday CSV is checked by a unit test")
    }

    /// Parses a holiday CSV.
    ///
    /// The first non-blank line is the header; it must name the columns `date`, `weekday`,
    /// `kind` and `name_tr`, in any order (others, such as `basis`, are ignored). Each row needs
    /// `date` as `YYYY-MM-DD`, `weekday` agreeing with the date (`Mon`, `Tue`, …; catches typos
    /// in the date) and `kind` `FULL` or `HALF_FROM_13:00`. Fields may be double-quoted
    /// (RFC 4180, `""` for a quote, no line breaks inside). Blank lines, a UTF-8 BOM and CRLF
    /// line ends are accepted. Rows need not be sorted.
    ///
    /// Two *different* holidays may fall on one date (the shipped data has four such dates,
    /// e.g. 1 May 2022 is both Emek ve Dayanışma Günü and the Ramazan arife): they are merged
    /// and the stronger kind wins (`FULL` over `HALF_FROM_13:00`). The same holiday (same `date` and
    /// `name_tr`) listed twice is rejected as a duplicate.
    ///
    /// # Errors
    ///
    /// [`CalendarError::Line`] for the first bad line in file order, naming its 1-based line
    /// number (the header is line 1) and the field at fault: `header`, `row` (bad quoting),
    /// `date` (malformed, impossible or duplicate), `weekday`, `kind` or `name_tr` (missing).
    /// [`CalendarError::Empty`] when there is no header or no data row.
    pub fn from_csv(text: &str) -> Result<Self, CalendarError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut lines = reader
            .records()
            .map(|record| {
                let mut record = record.map_err(|e| {
                    let line = e.position().map_or(0, csv::Position::line);
                    line_error(
                        usize::try_from(line).unwrap_or(usize::MAX),
                        "row",
                        e.to_string(),
                    )
                })?;
                let line_no = record
                    .position()
                    .map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
                // A line break inside a field means a quote was never closed (the data never
                // needs one): report it on the line where the field opened.
                if record.iter().any(|f| f.contains(['\n', '\r'])) {
                    return Err(line_error(line_no, "row", "unterminated quoted field"));
                }
                // Trimmed only now, so the check above still sees the line break.
                record.trim();
                Ok((line_no, record))
            })
            // A line of blanks reads as one empty field: skip it like an empty line.
            .filter(|row| !matches!(row, Ok((_, r)) if r.len() == 1 && r[0].is_empty()));

        let (header_line, header) = lines.next().ok_or(CalendarError::Empty)??;
        let columns = Columns::from_header(header_line, &header)?;

        let mut days = Vec::new();
        let mut seen: HashMap<(NaiveDate, String), usize> = HashMap::new();
        for line in lines {
            let (line_no, record) = line?;
            let row = columns.parse_row(line_no, &record)?;
            if let Some(first) = seen.insert((row.date, row.name), line_no) {
                return Err(line_error(
                    line_no,
                    "date",
                    format!(
                        "{} is listed twice with the same name_tr (first on line {first})",
                        row.date
                    ),
                ));
            }
            days.push((row.date, row.kind));
        }
        let rows = days.len();

        // Sort, then merge holidays that share a date, keeping the stronger kind.
        days.sort_unstable_by_key(|&(date, kind)| (date, strength(kind)));
        days.dedup_by(|later, kept| {
            // `later` sorts after `kept`, so on a shared date it is the stronger kind.
            let same_date = later.0 == kept.0;
            if same_date {
                kept.1 = later.1;
            }
            same_date
        });

        let (Some(&(first, _)), Some(&(last, _))) = (days.first(), days.last()) else {
            return Err(CalendarError::Empty);
        };
        Ok(Self {
            first_year: first.year(),
            last_year: last.year(),
            rows,
            days,
        })
    }

    /// What the holiday data says about `date`: [`DayKind::Working`] unless it is listed.
    /// Weekends are not considered (a plain Sunday is `Working`).
    #[must_use]
    pub fn day_kind(&self, date: NaiveDate) -> DayKind {
        match self.days.binary_search_by_key(&date, |&(d, _)| d) {
            Ok(index) => self.days[index].1,
            Err(_) => DayKind::Working,
        }
    }

    /// Whether the year of `date` lies within the years the data lists (`first_year..=last_year`).
    /// Outside them no holidays are known; see the module documentation.
    #[must_use]
    pub fn covers(&self, date: NaiveDate) -> bool {
        (self.first_year..=self.last_year).contains(&date.year())
    }

    /// The year of the earliest listed date.
    #[must_use]
    pub fn first_year(&self) -> i32 {
        self.first_year
    }

    /// The year of the latest listed date.
    #[must_use]
    pub fn last_year(&self) -> i32 {
        self.last_year
    }

    /// Strict calendar for iysgate's own legal duties: day 0 = the capture date; count every
    /// following day except Sundays and FULL holidays (Saturdays, half days count). Deadline =
    /// end of the 3rd counted day (23:59:59), or 13:00:00 when that day is a HALF day.
    /// Inclusive: an upload at exactly the deadline is on time.
    ///
    /// Only the date of `captured` matters: a capture at 00:00:00 and one at 23:59:59 of the same
    /// day get the same deadline. Beyond the covered years only Sundays are skipped, and a 3rd
    /// counted day there closes at 13:00:00 because it might be an unlisted half day: the earliest
    /// deadline any holiday data could give (see the module documentation).
    #[must_use]
    pub fn registration_deadline(&self, captured: NaiveDateTime) -> NaiveDateTime {
        let mut day = captured.date();
        let mut counted = 0;
        loop {
            // Only fails at the end of chrono's range (year 262 143).
            let Some(next) = day.succ_opt() else {
                return NaiveDateTime::MAX;
            };
            day = next;
            if day.weekday() == Weekday::Sun {
                continue;
            }
            let kind = self.day_kind(day);
            if kind == DayKind::FullHoliday {
                continue;
            }
            counted += 1;
            if counted == COUNTED_DAYS {
                let half = kind == DayKind::HalfFrom13 || !self.covers(day);
                let close = if half { HALF_DAY_CLOSE } else { END_OF_DAY };
                return day.and_time(close);
            }
        }
    }

    /// Whether the strict deadline for an event captured at `captured` has passed at `now`
    /// (`now > deadline`): exactly at the deadline is on time, any fraction of a second later
    /// (e.g. 23:59:59.5) is late.
    #[must_use]
    pub fn is_expired(&self, captured: NaiveDateTime, now: NaiveDateTime) -> bool {
        now > self.registration_deadline(captured)
    }

    /// Display calendar for reports: Monday–Friday minus FULL holidays.
    /// Half days are business days here.
    #[must_use]
    pub fn is_display_business_day(&self, date: NaiveDate) -> bool {
        is_monday_to_friday(date.weekday()) && self.day_kind(date) != DayKind::FullHoliday
    }

    /// Display business days strictly after `from` up to and including `to` (0 if to <= from).
    ///
    /// Takes time proportional to the number of holidays in the range, not the number of days.
    #[must_use]
    pub fn display_business_days_between(&self, from: NaiveDate, to: NaiveDate) -> u32 {
        if to <= from {
            return 0;
        }
        // Positive, and below 2^27 over chrono's whole date range.
        let total = (to.num_days_from_ce() - from.num_days_from_ce()).unsigned_abs();
        // Monday = 0 … Sunday = 6, for the first day of the range (the day after `from`).
        let first_weekday = from.weekday().succ().num_days_from_monday();
        let remainder = (0..total % 7)
            .filter(|offset| (first_weekday + offset) % 7 < 5)
            .fold(0, |n, _| n + 1);
        let weekdays = total / 7 * 5 + remainder;

        let start = self.days.partition_point(|&(d, _)| d <= from);
        let end = self.days.partition_point(|&(d, _)| d <= to);
        let holidays = self.days[start..end]
            .iter()
            .filter(|&&(d, kind)| kind == DayKind::FullHoliday && is_monday_to_friday(d.weekday()))
            .fold(0, |n: u32, _| n + 1);
        // Each counted holiday is a distinct Monday–Friday within the range: no underflow.
        weekdays - holidays
    }
}

impl fmt::Debug for BusinessCalendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let half = self
            .days
            .iter()
            .filter(|&&(_, kind)| kind == DayKind::HalfFrom13)
            .count();
        f.debug_struct("BusinessCalendar")
            .field("years", &(self.first_year..=self.last_year))
            .field("rows", &self.rows)
            .field("full_days", &(self.days.len() - half))
            .field("half_days", &half)
            .finish()
    }
}

fn is_monday_to_friday(weekday: Weekday) -> bool {
    !matches!(weekday, Weekday::Sat | Weekday::Sun)
}

/// Orders kinds so that merging holidays on one date keeps the stronger.
fn strength(kind: DayKind) -> u8 {
    match kind {
        DayKind::Working => 0,
        DayKind::HalfFrom13 => 1,
        DayKind::FullHoliday => 2,
    }
}

fn line_error(line: usize, field: &'static str, reason: impl Into<String>) -> CalendarError {
    CalendarError::Line {
        line,
        field,
        reason: reason.into(),
    }
}

/// Positions of the columns the calendar reads, taken from the header.
struct Columns {
    date: usize,
    weekday: usize,
    kind: usize,
    name: usize,
}

/// One data row, as far as the calendar cares.
struct Row {
    date: NaiveDate,
    kind: DayKind,
    name: String,
}

impl Columns {
    fn from_header(line_no: usize, header: &csv::StringRecord) -> Result<Self, CalendarError> {
        let find = |name: &str| {
            header.iter().position(|n| n == name).ok_or_else(|| {
                line_error(
                    line_no,
                    "header",
                    format!("no `{name}` column (expected `date,weekday,kind,name_tr,basis`)"),
                )
            })
        };
        Ok(Self {
            date: find("date")?,
            weekday: find("weekday")?,
            kind: find("kind")?,
            name: find("name_tr")?,
        })
    }

    fn parse_row(&self, line_no: usize, fields: &csv::StringRecord) -> Result<Row, CalendarError> {
        let field = |index: usize, name: &'static str| {
            fields
                .get(index)
                .ok_or_else(|| line_error(line_no, name, "missing (too few columns)"))
        };

        let date_text = field(self.date, "date")?;
        let date = parse_date(date_text).ok_or_else(|| {
            line_error(
                line_no,
                "date",
                format!("{date_text:?} is not a calendar date as YYYY-MM-DD"),
            )
        })?;

        let weekday_text = field(self.weekday, "weekday")?;
        let weekday: Weekday = weekday_text.parse().map_err(|_| {
            line_error(
                line_no,
                "weekday",
                format!("{weekday_text:?} is not a weekday (Mon, Tue, …)"),
            )
        })?;
        if weekday != date.weekday() {
            return Err(line_error(
                line_no,
                "weekday",
                format!(
                    "{date} is a {}, not {weekday_text:?}; check the date",
                    date.weekday()
                ),
            ));
        }

        let kind = match field(self.kind, "kind")? {
            KIND_FULL => DayKind::FullHoliday,
            KIND_HALF => DayKind::HalfFrom13,
            other => {
                return Err(line_error(
                    line_no,
                    "kind",
                    format!("{other:?} is neither {KIND_FULL} nor {KIND_HALF}"),
                ));
            }
        };
        let name = field(self.name, "name_tr")?.to_owned();
        Ok(Row { date, kind, name })
    }
}

/// Parses exactly `YYYY-MM-DD` (four-digit year, two-digit month and day).
fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let year = text[0..4].parse().ok()?;
    let month = text[5..7].parse().ok()?;
    let day = text[8..10].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "date,weekday,kind,name_tr,basis\n";

    fn cal() -> BusinessCalendar {
        BusinessCalendar::embedded()
    }

    fn d(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn dt(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    /// Deadline for a capture at noon on `day0`.
    fn deadline(cal: &BusinessCalendar, day0: &str) -> NaiveDateTime {
        cal.registration_deadline(dt(&format!("{day0} 12:00:00")))
    }

    fn line_err(csv: &str) -> (usize, &'static str, String) {
        match BusinessCalendar::from_csv(csv).unwrap_err() {
            CalendarError::Line {
                line,
                field,
                reason,
            } => (line, field, reason),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn embedded_data_parses_and_covers_2020_to_2030() {
        let cal = cal();
        assert_eq!(cal.rows, 187);
        // Four dates carry two holidays each and are merged.
        assert_eq!(cal.days.len(), 183);
        assert_eq!((cal.first_year(), cal.last_year()), (2020, 2030));
        assert!(cal.covers(d("2020-01-01")));
        assert!(cal.covers(d("2030-12-31")));
        assert!(!cal.covers(d("2019-12-31")));
        assert!(!cal.covers(d("2031-01-01")));
        assert_eq!(cal.day_kind(d("2026-05-27")), DayKind::FullHoliday);
        assert_eq!(cal.day_kind(d("2025-10-28")), DayKind::HalfFrom13);
        assert_eq!(cal.day_kind(d("2025-10-27")), DayKind::Working);
        assert!(cal.days.windows(2).all(|w| w[0].0 < w[1].0));
        // Merged dates keep the stronger kind: 23 Nisan 2029 (FULL) is also the Kurban arife.
        assert_eq!(cal.day_kind(d("2029-04-23")), DayKind::FullHoliday);
        assert_eq!(cal.day_kind(d("2022-05-01")), DayKind::FullHoliday);
        assert_eq!(cal.day_kind(d("2027-05-19")), DayKind::FullHoliday);
    }

    #[test]
    fn worked_examples_of_business_days_md() {
        let cal = cal();
        for (day0, expected) in [
            ("2026-05-20", "2026-05-23 23:59:59"), // Wed → Sat
            ("2025-03-27", "2025-04-02 23:59:59"), // Thu → Wed, over Ramazan Bayramı
            ("2024-04-04", "2024-04-08 23:59:59"), // Thu → Mon, before the arife
            ("2024-06-14", "2024-06-21 23:59:59"), // Fri → Fri, over Kurban Bayramı
            ("2025-10-24", "2025-10-28 13:00:00"), // Fri → Tue half day
        ] {
            assert_eq!(deadline(&cal, day0), dt(expected), "day 0 = {day0}");
        }
    }

    #[test]
    fn half_day_deadline_is_13_00_inclusive() {
        let cal = cal();
        let captured = dt("2025-10-24 09:30:00");
        assert_eq!(
            cal.registration_deadline(captured),
            dt("2025-10-28 13:00:00")
        );
        assert!(!cal.is_expired(captured, dt("2025-10-28 12:59:59")));
        assert!(!cal.is_expired(captured, dt("2025-10-28 13:00:00")));
        assert!(cal.is_expired(captured, dt("2025-10-28 13:00:01")));
    }

    #[test]
    fn full_day_deadline_is_23_59_59_inclusive() {
        let cal = cal();
        let captured = dt("2025-01-07 10:00:00"); // Tue → Fri 10th
        assert!(!cal.is_expired(captured, dt("2025-01-10 23:59:59")));
        assert!(cal.is_expired(captured, dt("2025-01-11 00:00:00")));
        assert!(!cal.is_expired(captured, captured));
    }

    #[test]
    fn sundays_are_skipped_saturdays_count() {
        let cal = cal();
        // Fri: Sat (1), Sun skipped, Mon (2), Tue (3).
        assert_eq!(deadline(&cal, "2025-01-10"), dt("2025-01-14 23:59:59"));
        // Thu: Fri (1), Sat (2), Sun skipped, Mon (3).
        assert_eq!(deadline(&cal, "2025-01-09"), dt("2025-01-13 23:59:59"));
        // Wed: Thu, Fri, Sat — the deadline itself falls on a Saturday.
        assert_eq!(deadline(&cal, "2025-01-08"), dt("2025-01-11 23:59:59"));
    }

    #[test]
    fn capture_on_a_sunday_or_a_holiday_is_day_0() {
        let cal = cal();
        // Sunday: Mon (1), Tue (2), Wed (3).
        assert_eq!(deadline(&cal, "2025-01-05"), dt("2025-01-08 23:59:59"));
        // Sunday 2026-05-24: Mon (1), Tue arife (2), Wed–Sat bayram and Sun skipped, Mon (3).
        assert_eq!(deadline(&cal, "2026-05-24"), dt("2026-06-01 23:59:59"));
        // FULL holiday Thu 2026-05-28: Fri, Sat bayram and Sun skipped; Mon, Tue, Wed.
        assert_eq!(deadline(&cal, "2026-05-28"), dt("2026-06-03 23:59:59"));
        // FULL holiday on a Wednesday (23 Nisan 2025): Thu, Fri, Sat.
        assert_eq!(deadline(&cal, "2025-04-23"), dt("2025-04-26 23:59:59"));
    }

    #[test]
    fn kurban_bayrami_2026_run_is_skipped() {
        let cal = cal();
        // Mon 25 May: Tue 26 arife counts (1); Wed 27 – Sat 30 FULL and Sun 31 skipped;
        // Mon 1 June (2), Tue 2 June (3).
        assert_eq!(deadline(&cal, "2026-05-25"), dt("2026-06-02 23:59:59"));
        // Capture on the arife itself: the whole run is skipped; Mon, Tue, Wed.
        assert_eq!(deadline(&cal, "2026-05-26"), dt("2026-06-03 23:59:59"));
    }

    #[test]
    fn day_0_is_the_date_not_24_hours() {
        let cal = cal();
        let late = cal.registration_deadline(dt("2025-01-07 23:59:59"));
        let early = cal.registration_deadline(dt("2025-01-07 00:00:00"));
        assert_eq!(late, early);
        assert_eq!(late, dt("2025-01-10 23:59:59"));
        // One second later is the next day 0, and a day later deadline.
        assert_eq!(
            cal.registration_deadline(dt("2025-01-08 00:00:00")),
            dt("2025-01-11 23:59:59")
        );
    }

    #[test]
    fn outside_coverage_only_sundays_are_skipped() {
        let cal = cal();
        // 1 January 2031 would be Yılbaşı, but 2031 is not in the data.
        assert!(!cal.covers(d("2031-01-01")));
        assert_eq!(cal.day_kind(d("2031-01-01")), DayKind::Working);
        // Counted anyway; the 3rd day might be an unlisted half day, so it closes at 13:00.
        assert_eq!(deadline(&cal, "2030-12-31"), dt("2031-01-03 13:00:00"));
        // Thu 2 Jan 2031: Fri (1), Sat (2), Sun skipped, Mon (3).
        assert_eq!(deadline(&cal, "2031-01-02"), dt("2031-01-06 13:00:00"));
        // 28–29 October 2031 (half day, then Cumhuriyet Bayramı) are not known either.
        assert_eq!(deadline(&cal, "2031-10-26"), dt("2031-10-29 13:00:00"));
        // Covered up to the last day of the data: 2030-12-31 is an ordinary Tuesday.
        assert_eq!(deadline(&cal, "2030-12-27"), dt("2030-12-31 23:59:59"));
        // Before the data: a calendar that only knows 2025 ignores 1 Jan 2024.
        let only_2025 =
            BusinessCalendar::from_csv(&format!("{HEADER}2025-01-01,Wed,FULL,,\n")).unwrap();
        assert!(!only_2025.covers(d("2024-01-01")));
        assert_eq!(
            deadline(&only_2025, "2023-12-31"),
            dt("2024-01-03 13:00:00")
        );
        // …while its own 1 January 2025 is skipped.
        assert_eq!(
            deadline(&only_2025, "2024-12-31"),
            dt("2025-01-04 23:59:59")
        );
    }

    #[test]
    fn display_calendar_week_with_a_wednesday_holiday() {
        let cal = cal();
        // Mon 21 – Sun 27 April 2025; Wed 23 is 23 Nisan.
        assert_eq!(
            cal.display_business_days_between(d("2025-04-20"), d("2025-04-27")),
            4
        );
        assert!(!cal.is_display_business_day(d("2025-04-23")));
        assert!(cal.is_display_business_day(d("2025-04-24")));
        assert!(!cal.is_display_business_day(d("2025-04-26"))); // Saturday
        assert!(!cal.is_display_business_day(d("2025-04-27"))); // Sunday
        assert!(cal.is_display_business_day(d("2025-10-28"))); // half day still counts
        // A plain week has 5.
        assert_eq!(
            cal.display_business_days_between(d("2025-01-05"), d("2025-01-12")),
            5
        );
    }

    #[test]
    fn display_days_between_bounds() {
        let cal = cal();
        let day = d("2025-04-22");
        assert_eq!(cal.display_business_days_between(day, day), 0);
        assert_eq!(cal.display_business_days_between(day, d("2025-04-01")), 0);
        // `from` excluded, `to` included.
        assert_eq!(cal.display_business_days_between(d("2025-04-21"), day), 1);
        assert_eq!(cal.display_business_days_between(day, d("2025-04-23")), 0);
        assert_eq!(cal.display_business_days_between(day, d("2025-04-24")), 1);
    }

    #[test]
    fn display_days_between_matches_day_by_day_count() {
        let cal = cal();
        let mut from = d("2019-12-20");
        while from < d("2031-01-10") {
            let mut to = from;
            let mut expected = 0;
            for _ in 0..40 {
                to = to.succ_opt().unwrap();
                expected += u32::from(cal.is_display_business_day(to));
                assert_eq!(
                    cal.display_business_days_between(from, to),
                    expected,
                    "{from} → {to}"
                );
            }
            from = from + chrono::Days::new(3);
        }
        // One long range: 2020 has 366 days, 262 of them Mon–Fri.
        let full_2020 = cal
            .days
            .iter()
            .filter(|&&(date, kind)| {
                date.year() == 2020
                    && kind == DayKind::FullHoliday
                    && is_monday_to_friday(date.weekday())
            })
            .count();
        assert_eq!(
            cal.display_business_days_between(d("2019-12-31"), d("2020-12-31")),
            262 - u32::try_from(full_2020).unwrap()
        );
    }

    #[test]
    fn csv_accepts_quotes_crlf_bom_blank_lines_and_any_order() {
        let csv = "\u{feff}date,weekday,kind,name_tr,basis\r\n\r\n\
                   2026-05-19,Tue,FULL,\"Atatürk'ü Anma, Gençlik ve \"\"Spor\"\" Bayramı\",fixed\r\n\
                   2025-10-28,Tue,HALF_FROM_13:00,Cumhuriyet Bayramı,fixed\r\n\n";
        let cal = BusinessCalendar::from_csv(csv).unwrap();
        assert_eq!((cal.first_year(), cal.last_year()), (2025, 2026));
        assert_eq!(cal.day_kind(d("2026-05-19")), DayKind::FullHoliday);
        assert_eq!(cal.day_kind(d("2025-10-28")), DayKind::HalfFrom13);
        // Columns are found by name.
        let reordered =
            BusinessCalendar::from_csv("kind,name_tr,date,weekday\nFULL,Yılbaşı,2025-01-01,Wed\n");
        assert_eq!(
            reordered.unwrap().day_kind(d("2025-01-01")),
            DayKind::FullHoliday
        );
        // RFC 4180 quoting: a comma and `""` inside a quoted field.
        let quoted = BusinessCalendar::from_csv(
            "date,weekday,kind,name_tr\n2025-01-01,Wed,\"FULL\",\"Yılbaşı, \"\"yeni\"\" yıl\"\n",
        );
        assert_eq!(
            quoted.unwrap().day_kind(d("2025-01-01")),
            DayKind::FullHoliday
        );
    }

    #[test]
    fn csv_errors_name_line_and_field() {
        let (line, field, reason) = line_err(&format!(
            "{HEADER}2025-01-01,Wed,FULL,Yılbaşı,fixed\n2025-02-30,Sun,FULL,x,fixed\n"
        ));
        assert_eq!((line, field), (3, "date"), "{reason}");

        let (line, field, _) = line_err(&format!("{HEADER}2025-1-01,Wed,FULL,x,fixed\n"));
        assert_eq!((line, field), (2, "date"));

        let (line, field, reason) = line_err(&format!("{HEADER}2025-01-01,Wed,HALF,x,fixed\n"));
        assert_eq!((line, field), (2, "kind"));
        assert!(reason.contains("HALF_FROM_13:00"), "{reason}");

        let (line, field, reason) = line_err(&format!("{HEADER}2025-01-02,Wed,FULL,x,fixed\n"));
        assert_eq!((line, field), (2, "weekday"));
        assert!(reason.contains("Thu"), "{reason}");

        let (line, field, _) = line_err(&format!("{HEADER}2025-01-01,Wen,FULL,x,fixed\n"));
        assert_eq!((line, field), (2, "weekday"));

        let (line, field, reason) = line_err(&format!(
            "{HEADER}2025-01-01,Wed,FULL,Yılbaşı,fixed\n\n2025-04-23,Wed,FULL,b,fixed\n\
             2025-01-01,Wed,HALF_FROM_13:00,Yılbaşı,fixed\n2025-02-30,Sun,FULL,x,fixed\n"
        ));
        assert_eq!((line, field), (5, "date"));
        assert!(reason.contains("line 2"), "{reason}");

        let (line, field, _) = line_err("date,weekday,kind\n2025-01-01,Wed,FULL\n");
        assert_eq!((line, field), (1, "header"));

        let (line, field, _) = line_err(&format!("{HEADER}2025-01-01,Wed\n"));
        assert_eq!((line, field), (2, "kind"));

        let (line, field, _) = line_err(&format!("{HEADER}2025-01-01,Wed,FULL,\"open,x\n"));
        assert_eq!((line, field), (2, "row"));

        let (line, field, _) = line_err("2025-01-01,Wed,FULL,x,fixed\n");
        assert_eq!((line, field), (1, "header"));

        let message = BusinessCalendar::from_csv(&format!("{HEADER}2025-13-01,Wed,FULL,x,y\n"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("line 2") && message.contains("date"),
            "{message}"
        );
    }

    #[test]
    fn different_holidays_on_one_date_merge_to_the_stronger_kind() {
        for rows in [
            "2029-04-23,Mon,HALF_FROM_13:00,Kurban Bayramı,religious\n\
             2029-04-23,Mon,FULL,Ulusal Egemenlik ve Çocuk Bayramı,fixed\n",
            "2029-04-23,Mon,FULL,Ulusal Egemenlik ve Çocuk Bayramı,fixed\n\
             2029-04-23,Mon,HALF_FROM_13:00,Kurban Bayramı,religious\n",
        ] {
            let cal = BusinessCalendar::from_csv(&format!("{HEADER}{rows}")).unwrap();
            assert_eq!((cal.rows, cal.days.len()), (2, 1));
            assert_eq!(cal.day_kind(d("2029-04-23")), DayKind::FullHoliday);
        }
    }

    #[test]
    fn csv_without_rows_is_empty() {
        for csv in ["", "\n \n", HEADER, "\u{feff}date,weekday,kind,name_tr\n\n"] {
            assert!(
                matches!(BusinessCalendar::from_csv(csv), Err(CalendarError::Empty)),
                "{csv:?}"
            );
        }
    }

    #[test]
    fn debug_is_a_summary() {
        let text = format!("{:?}", cal());
        assert!(text.contains("2020..=2030"), "{text}");
    }
}
