//! When: the team's timezone, its cron schedule, the next firing, and the reporting window.
//!
//! Everything here is a pure function of its arguments (a zone, a schedule, an instant or a
//! date), so DST changes are unit-tested without clocks.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{
    DateTime, Datelike, Days, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;
use croner::Cron;

/// A team's timezone: an IANA zone, or a fixed offset for teams that want one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    Named(Tz),
    Fixed(FixedOffset),
}

impl Zone {
    pub fn parse(text: &str) -> Result<Zone, String> {
        if let Some(offset) = parse_fixed_offset(text) {
            return Ok(Zone::Fixed(offset));
        }
        Tz::from_str(text).map(Zone::Named).map_err(|_| {
            format!(
                "unknown timezone {text:?}: use an IANA name such as \"Europe/Berlin\" or \"Asia/Kolkata\", or a fixed offset such as \"+05:30\""
            )
        })
    }

    /// The zone's offset from UTC at an instant.
    pub fn offset_at(self, instant: DateTime<Utc>) -> FixedOffset {
        match self {
            Zone::Named(tz) => tz.offset_from_utc_datetime(&instant.naive_utc()).fix(),
            Zone::Fixed(offset) => offset,
        }
    }

    pub fn local(self, instant: DateTime<Utc>) -> NaiveDateTime {
        instant.naive_utc() + self.offset_at(instant)
    }

    /// The first instant of a local date. Usually midnight; where a DST change skips midnight
    /// (America/Santiago, Asia/Beirut) the first minute that exists. A date a zone skipped
    /// whole (Pacific/Apia's 2011-12-30) starts where the next one does.
    pub fn start_of_day(self, date: NaiveDate) -> DateTime<Utc> {
        let tz = match self {
            Zone::Named(tz) => tz,
            Zone::Fixed(offset) => return (date.and_time(NaiveTime::MIN) - offset).and_utc(),
        };
        (0..=48 * 60)
            .find_map(|minute| {
                let local = date.and_time(NaiveTime::MIN) + chrono::Duration::minutes(minute);
                tz.from_local_datetime(&local).earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .expect("no zone skips two days")
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Named(tz) => f.write_str(tz.name()),
            Zone::Fixed(offset) => f.write_str(&format_offset(*offset)),
        }
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({self})")
    }
}

/// A fixed offset such as `+05:30`, `-03:30` or `+00:00`.
pub fn parse_fixed_offset(text: &str) -> Option<FixedOffset> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if minutes > 59 {
        return None;
    }
    let seconds = sign * (hours * 3600 + minutes * 60);
    // The offsets clocks use: Baker Island's -12:00 to Kiritimati's +14:00.
    if !(-12 * 3600..=14 * 3600).contains(&seconds) {
        return None;
    }
    FixedOffset::east_opt(seconds)
}

/// `+05:30`, `-04:00`, `+00:00`: the API's `offset` format.
pub fn format_offset(offset: FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The whole local days one digest covers, `first` to `last` inclusive: one day for a daily
/// schedule, Friday to Sunday for a Monday of `1-5`, a month for `0 9 1 * *`. It keys the
/// ledger, so a changed schedule never suppresses a different span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub first: NaiveDate,
    pub last: NaiveDate,
}

impl Span {
    pub fn day(date: NaiveDate) -> Span {
        Span {
            first: date,
            last: date,
        }
    }

    pub fn days(&self) -> u32 {
        ((self.last - self.first).num_days() + 1) as u32
    }

    /// When the span's last day is over in `zone`: no digest of it may go out before.
    pub fn ends(&self, zone: Zone) -> DateTime<Utc> {
        zone.start_of_day(next_day(self.last))
    }
}

impl Span {
    /// The span of the same length just before: the day before, the seven days before, the
    /// Tuesday to Thursday before a Monday's Friday-to-Sunday. A whole calendar month's is the
    /// month before, whatever its length.
    pub fn previous(&self) -> Span {
        let whole_month = self.first.day() == 1
            && self.last.month() == self.first.month()
            && next_day(self.last).day() == 1;
        if whole_month {
            let last = previous_day(self.first);
            return Span {
                first: last.with_day(1).unwrap_or(last),
                last,
            };
        }
        let days = Days::new(u64::from(self.days()));
        Span {
            first: self.first.checked_sub_days(days).unwrap_or(self.first),
            last: previous_day(self.first),
        }
    }

    /// The same span seven days earlier (the same weekdays last week), for spans shorter than a
    /// week: for a week it is [`Span::previous`], and longer spans overlap it.
    pub fn a_week_earlier(&self) -> Option<Span> {
        if self.days() >= 7 {
            return None;
        }
        let week = Days::new(7);
        Some(Span {
            first: self.first.checked_sub_days(week)?,
            last: self.last.checked_sub_days(week)?,
        })
    }
}

/// An earlier span a digest is compared with (`compare` in a team's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// The span of the same length just before.
    Previous,
    /// The same span seven days earlier.
    LastWeek,
}

impl Comparison {
    pub fn parse(text: &str) -> Result<Comparison, String> {
        match text {
            "previous" => Ok(Comparison::Previous),
            "last_week" => Ok(Comparison::LastWeek),
            other => Err(format!(
                "unknown comparison {other:?}: use \"previous\" and/or \"last_week\", or [] for none"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Previous => "previous",
            Comparison::LastWeek => "last_week",
        }
    }

    /// The span `span` is compared with, if this comparison applies to it.
    pub fn of(self, span: Span) -> Option<Span> {
        match self {
            Comparison::Previous => Some(span.previous()),
            Comparison::LastWeek => span.a_week_earlier(),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..{}", self.first, self.last)
        }
    }
}

fn next_day(date: NaiveDate) -> NaiveDate {
    date.checked_add_days(Days::new(1)).unwrap_or(date)
}

fn previous_day(date: NaiveDate) -> NaiveDate {
    date.checked_sub_days(Days::new(1)).unwrap_or(date)
}

/// A span as the API is asked for it: two exact instants, written in one offset (the one in
/// force when the span starts), since the API reads both ends in a single offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub span: Span,
    pub offset: FixedOffset,
    /// The span's first instant: local midnight, or the first instant after a skipped one.
    pub start: DateTime<Utc>,
    /// The last second before the day after the span starts: a 23- or 25-hour day ends an
    /// hour earlier or later on the start's offset than 23:59:59.
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn for_span(zone: Zone, span: Span) -> Window {
        let start = zone.start_of_day(span.first);
        Window {
            span,
            offset: zone.offset_at(start),
            start,
            end: span.ends(zone) - chrono::Duration::seconds(1),
        }
    }

    pub fn for_date(zone: Zone, date: NaiveDate) -> Window {
        Window::for_span(zone, Span::day(date))
    }

    /// Yesterday's window relative to `now` in the team's zone.
    pub fn yesterday(zone: Zone, now: DateTime<Utc>) -> Window {
        Window::for_date(zone, previous_day(zone.local(now).date()))
    }

    pub fn start_date(&self) -> String {
        self.written(self.start)
    }

    pub fn end_date(&self) -> String {
        self.written(self.end)
    }

    /// `%Y-%m-%d %H:%M:%S` on the window's offset. Without chrono's format string, which it
    /// reads anew on every call, for the years `{:04}` writes as `%Y` does.
    fn written(&self, instant: DateTime<Utc>) -> String {
        let at = instant.naive_utc() + self.offset;
        if !(0..=9999).contains(&at.year()) {
            return at.format("%Y-%m-%d %H:%M:%S").to_string();
        }
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        )
    }

    pub fn offset_text(&self) -> String {
        format_offset(self.offset)
    }

    /// The local hour of day (in `zone`) of an hour row the API labelled `label_hour` on the
    /// window's offset. The `nth` row with that label (0 for the first) is its `nth`
    /// occurrence in the window: a 25-hour day labels its first and last hours both "12 AM".
    /// Where a change moved the clock, the label and the local hour differ by the change.
    pub fn local_hour(&self, zone: Zone, label_hour: u8, nth: usize) -> u8 {
        let offset_start = self.start.naive_utc() + self.offset;
        let first = offset_start.date().and_time(NaiveTime::MIN)
            + chrono::Duration::hours(i64::from(label_hour));
        let first = if first < offset_start.with_minute(0).unwrap_or(offset_start) {
            first + chrono::Duration::days(1)
        } else {
            first
        };
        let at = first + chrono::Duration::days(nth as i64);
        let instant = (at - self.offset).and_utc();
        // Rows beyond the window (a longer span's hour-of-day sums) read on its first day.
        let instant = if instant > self.end {
            (first - self.offset).and_utc()
        } else {
            instant
        };
        zone.local(instant).hour() as u8
    }
}

/// A cron schedule: 5 fields, or 6 with seconds first, read in the team's timezone. Teams
/// with the same line share one parsed copy (see [`Schedules`]).
#[derive(Clone)]
pub struct Schedule(Arc<Parsed>);

struct Parsed {
    cron: Cron,
    text: String,
}

/// Each distinct cron line parsed once: 100,000 teams mostly share a few dozen lines, and
/// parsing one is most of what loading a team costs.
#[derive(Default)]
pub struct Schedules(std::collections::HashMap<String, Result<Schedule, String>>);

impl Schedules {
    pub fn parse(&mut self, text: &str) -> Result<Schedule, String> {
        if let Some(parsed) = self.0.get(text) {
            return parsed.clone();
        }
        let parsed = Schedule::parse(text);
        self.0.insert(text.to_owned(), parsed.clone());
        parsed
    }
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let fields = text.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(format!(
                "{text:?} has {fields} fields: use 5 (minute hour day month weekday, e.g. \"0 9 * * *\") or 6 with seconds first"
            ));
        }
        let cron = Cron::from_str(text).map_err(|e| {
            format!(
                "{text:?} is not a valid cron line ({e}); e.g. \"0 9 * * *\" is 09:00 every day"
            )
        })?;
        // Every 5- or 6-field line that fires at all fires within a few years of any date.
        let epoch = DateTime::<Utc>::from_timestamp(946_684_800, 0).expect("2000-01-01");
        if cron.find_next_occurrence(&epoch, false).is_err() {
            return Err(format!(
                "{text:?} never fires (no such day, e.g. 30 February): check the day and month fields"
            ));
        }
        Ok(Schedule(Arc::new(Parsed {
            cron,
            text: text.to_owned(),
        })))
    }

    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The first firing strictly after `after`. A local time that a spring-forward change skips
    /// fires once, at the first instant after the gap; one that a fall-back change repeats
    /// fires once, at its first occurrence.
    pub fn next_after(&self, zone: Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = match zone {
            Zone::Named(tz) => tz,
            Zone::Fixed(offset) => return self.next_in(&after.with_timezone(&offset)),
        };
        let mut from = after;
        loop {
            // croner places a repeated local time at its first occurrence, which is in the
            // past when asked from the second: that time fired already, so look past it.
            let next = self.next_in(&from.with_timezone(&tz))?;
            if next > after {
                return Some(next);
            }
            let second = tz.from_local_datetime(&zone.local(next)).latest()?;
            from = second
                .with_timezone(&Utc)
                .max(from + chrono::Duration::seconds(1));
        }
    }

    fn next_in<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Utc>> {
        self.0
            .cron
            .find_next_occurrence(after, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Whether the schedule fires on a local date: its first firing from the date's first
    /// instant on falls on that date. Forward only: croner's backward search snaps a firing in
    /// a DST gap to 23:59:59 of the day before.
    pub fn fires_on(&self, zone: Zone, date: NaiveDate) -> bool {
        let start = zone.start_of_day(date);
        self.next_after(zone, start - chrono::Duration::seconds(1))
            .is_some_and(|firing| zone.local(firing).date() == date)
    }

    /// What a firing reports: every whole local day from the date of the schedule's last
    /// firing on an earlier date up to the day before the firing. Depends only on the firing's
    /// local date, so every firing of one day covers the same span.
    pub fn coverage(&self, zone: Zone, firing: DateTime<Utc>) -> Span {
        self.coverage_of(zone, zone.local(firing).date())
    }

    /// The span a firing on local date `date` covers.
    pub fn coverage_of(&self, zone: Zone, date: NaiveDate) -> Span {
        let last = previous_day(date);
        let mut first = last;
        // A 29 February schedule looks back four years; nothing fires more rarely.
        for _ in 0..MAX_LOOKBACK_DAYS {
            if self.fires_on(zone, first) {
                break;
            }
            first = previous_day(first);
        }
        Span { first, last }
    }

    /// The span that contains local date `date`: the one the first firing on a later date
    /// covers (Friday to Sunday for a Saturday of a weekday schedule), or the day alone for a
    /// schedule that fires on no later date within four years.
    pub fn span_containing(&self, zone: Zone, date: NaiveDate) -> Span {
        let mut firing = next_day(date);
        for _ in 0..MAX_LOOKBACK_DAYS {
            if self.fires_on(zone, firing) {
                return self.coverage_of(zone, firing);
            }
            firing = next_day(firing);
        }
        Span::day(date)
    }

    /// The span the schedule's last firing at or before `now` covered: the latest digest a
    /// team could have had.
    pub fn latest_span(&self, zone: Zone, now: DateTime<Utc>) -> Span {
        let mut date = zone.local(now).date();
        for _ in 0..MAX_LOOKBACK_DAYS {
            let first =
                self.next_after(zone, zone.start_of_day(date) - chrono::Duration::seconds(1));
            if first.is_some_and(|t| t <= now && zone.local(t).date() == date) {
                return self.coverage_of(zone, date);
            }
            date = previous_day(date);
        }
        Span::day(previous_day(zone.local(now).date()))
    }

    /// The local dates on which the schedule fires in `(after, until]`, each with its first
    /// firing there. One croner step per date, however often the schedule fires in a day, so
    /// a seconds-level schedule costs no more than a daily one.
    pub fn firing_dates(
        &self,
        zone: Zone,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<(NaiveDate, DateTime<Utc>)> {
        let mut dates = Vec::new();
        let mut cursor = after;
        while let Some(firing) = self.next_after(zone, cursor).filter(|t| *t <= until) {
            let date = zone.local(firing).date();
            dates.push((date, firing));
            let tomorrow = zone.start_of_day(next_day(date)) - chrono::Duration::seconds(1);
            if tomorrow <= cursor {
                break;
            }
            cursor = tomorrow;
        }
        dates
    }

    /// The first firing after `after` on a later local date than any firing up to `after`:
    /// the next time a new span becomes due (a seconds-level schedule's other firings of the
    /// day cover a span already due).
    pub fn next_new_date(&self, zone: Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = self.next_after(zone, after)?;
        let today = zone.local(after).date();
        let fired_today = self
            .next_after(
                zone,
                zone.start_of_day(today) - chrono::Duration::seconds(1),
            )
            .is_some_and(|first| first <= after);
        if fired_today && zone.local(next).date() == today {
            let tomorrow = zone.start_of_day(next_day(today));
            return self.next_after(zone, tomorrow - chrono::Duration::seconds(1));
        }
        Some(next)
    }
}

/// How far back a firing's coverage may reach: four years and a day.
const MAX_LOOKBACK_DAYS: usize = 4 * 366;

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.0.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> Zone {
        Zone::parse(name).unwrap()
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn offset_on(zone_name: &str, day: &str) -> String {
        Window::for_date(zone(zone_name), date(day)).offset_text()
    }

    fn span(first: &str, last: &str) -> Span {
        Span {
            first: date(first),
            last: date(last),
        }
    }

    #[test]
    fn each_span_is_compared_with_the_one_before_and_the_same_weekdays_last_week() {
        let cases = [
            // (span, previous, a week earlier)
            (
                span("2026-11-24", "2026-11-24"),
                span("2026-11-23", "2026-11-23"),
                Some(span("2026-11-17", "2026-11-17")),
            ),
            // A Monday's Friday to Sunday: Tuesday to Thursday before it, and last weekend.
            (
                span("2026-11-20", "2026-11-22"),
                span("2026-11-17", "2026-11-19"),
                Some(span("2026-11-13", "2026-11-15")),
            ),
            // A week: the week before, which is also a week earlier, so that one is left out.
            (
                span("2026-11-16", "2026-11-22"),
                span("2026-11-09", "2026-11-15"),
                None,
            ),
            // Calendar months, whatever their lengths, and across a year's end.
            (
                span("2026-03-01", "2026-03-31"),
                span("2026-02-01", "2026-02-28"),
                None,
            ),
            (
                span("2024-03-01", "2024-03-31"),
                span("2024-02-01", "2024-02-29"),
                None,
            ),
            (
                span("2027-01-01", "2027-01-31"),
                span("2026-12-01", "2026-12-31"),
                None,
            ),
            // Days across a year's end and a leap day.
            (
                span("2027-01-01", "2027-01-01"),
                span("2026-12-31", "2026-12-31"),
                Some(span("2026-12-25", "2026-12-25")),
            ),
            (
                span("2024-03-01", "2024-03-01"),
                span("2024-02-29", "2024-02-29"),
                Some(span("2024-02-23", "2024-02-23")),
            ),
            // Not a whole month (the 2nd to the end): the same length just before.
            (
                span("2026-03-02", "2026-03-31"),
                span("2026-01-31", "2026-03-01"),
                None,
            ),
        ];
        for (given, previous, earlier) in cases {
            assert_eq!(given.previous(), previous, "{given}");
            assert_eq!(given.previous().days(), previous.days());
            assert_eq!(given.a_week_earlier(), earlier, "{given}");
            assert_eq!(Comparison::Previous.of(given), Some(previous));
            assert_eq!(Comparison::LastWeek.of(given), earlier);
        }
        assert!(
            Comparison::parse("yesterday")
                .unwrap_err()
                .contains("previous")
        );
    }

    #[test]
    fn offsets_follow_the_zone_and_the_day() {
        assert_eq!(offset_on("America/New_York", "2026-07-15"), "-04:00");
        assert_eq!(offset_on("America/New_York", "2026-01-15"), "-05:00");
        assert_eq!(offset_on("Asia/Kathmandu", "2026-07-15"), "+05:45");
        assert_eq!(offset_on("Pacific/Kiritimati", "2026-07-15"), "+14:00");
        assert_eq!(offset_on("-03:30", "2026-07-15"), "-03:30");
        assert_eq!(offset_on("Asia/Kolkata", "2026-03-18"), "+05:30");
    }

    #[test]
    fn a_dst_change_day_sends_the_offset_in_force_at_its_midnight() {
        // Northern: New York springs forward 2026-03-08 and falls back 2026-11-01.
        assert_eq!(offset_on("America/New_York", "2026-03-08"), "-05:00");
        assert_eq!(offset_on("America/New_York", "2026-03-09"), "-04:00");
        assert_eq!(offset_on("America/New_York", "2026-11-01"), "-04:00");
        assert_eq!(offset_on("America/New_York", "2026-11-02"), "-05:00");
        // Southern: Sydney falls back 2026-04-05 and springs forward 2026-10-04.
        assert_eq!(offset_on("Australia/Sydney", "2026-04-05"), "+11:00");
        assert_eq!(offset_on("Australia/Sydney", "2026-04-06"), "+10:00");
        assert_eq!(offset_on("Australia/Sydney", "2026-10-04"), "+10:00");
        assert_eq!(offset_on("Australia/Sydney", "2026-10-05"), "+11:00");
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_at_its_first_minute() {
        // Santiago springs forward at 24:00 on 2026-09-05: 2026-09-06 starts at 01:00 -03:00.
        let chile = zone("America/Santiago");
        assert_eq!(
            chile.start_of_day(date("2026-09-06")),
            utc("2026-09-06T04:00:00Z")
        );
        assert_eq!(offset_on("America/Santiago", "2026-09-06"), "-03:00");
    }

    #[test]
    fn a_day_a_zone_skipped_whole_does_not_panic() {
        let apia = zone("Pacific/Apia");
        let skipped = apia.start_of_day(date("2011-12-30"));
        assert_eq!(skipped, apia.start_of_day(date("2011-12-31")));
        assert_eq!(offset_on("Pacific/Apia", "2011-12-30"), "+14:00");
    }

    #[test]
    fn yesterday_is_the_local_yesterday() {
        // 02:00 UTC on the 16th is still the 15th in New York and already the 16th in Kolkata.
        let now = utc("2026-07-16T02:00:00Z");
        let ny = Window::yesterday(zone("America/New_York"), now);
        assert_eq!(ny.span, Span::day(date("2026-07-14")));
        let kolkata = Window::yesterday(zone("Asia/Kolkata"), now);
        assert_eq!(kolkata.span, Span::day(date("2026-07-15")));
        assert_eq!(kolkata.start_date(), "2026-07-15 00:00:00");
        assert_eq!(kolkata.end_date(), "2026-07-15 23:59:59");
        let kiritimati = Window::yesterday(zone("Pacific/Kiritimati"), utc("2026-07-15T10:00:00Z"));
        assert_eq!(kiritimati.span, Span::day(date("2026-07-15")));
    }

    #[test]
    fn a_window_is_written_as_chrono_writes_it_in_any_year() {
        // `preview --date` takes any date chrono reads, signed years too.
        for day in [
            "-0001-06-15",
            "0000-01-03",
            "0999-12-31",
            "2026-12-31",
            "9999-12-31",
            "+10000-01-01",
        ] {
            for name in ["Pacific/Kiritimati", "Etc/GMT+12", "America/New_York"] {
                let window = Window::for_date(zone(name), date(day));
                let chrono = |at: DateTime<Utc>| {
                    (at.naive_utc() + window.offset)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                };
                assert_eq!(window.start_date(), chrono(window.start), "{day} {name}");
                assert_eq!(window.end_date(), chrono(window.end), "{day} {name}");
            }
        }
    }

    #[test]
    fn unknown_zones_and_bad_offsets_are_rejected_with_advice() {
        let err = Zone::parse("Asia/Kolkatta").unwrap_err();
        assert!(
            err.contains("Asia/Kolkatta") && err.contains("IANA"),
            "{err}"
        );
        assert!(Zone::parse("+5:30").is_err());
        assert!(Zone::parse("+15:00").is_err());
    }

    #[test]
    fn schedules_take_five_or_six_fields() {
        assert!(Schedule::parse("0 9 * * *").is_ok());
        assert!(Schedule::parse("*/2 * * * * *").is_ok());
        let err = Schedule::parse("0 9 * *").unwrap_err();
        assert!(err.contains("4 fields"), "{err}");
        assert!(Schedule::parse("0 25 * * *").is_err());
        assert!(Schedule::parse("0 9 * * * * 2026").is_err());
        let never = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(never.contains("never fires"), "{never}");
        assert!(Schedule::parse("0 0 29 2 *").is_ok());
    }

    fn next(schedule: &str, zone_name: &str, after: &str) -> DateTime<Utc> {
        Schedule::parse(schedule)
            .unwrap()
            .next_after(zone(zone_name), utc(after))
            .unwrap()
    }

    #[test]
    fn nine_am_berlin_stays_nine_am_across_both_changes() {
        // CET (+01:00) until 2026-03-29, CEST (+02:00) until 2026-10-25.
        assert_eq!(
            next("0 9 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z"),
            utc("2026-03-29T07:00:00Z")
        );
        assert_eq!(
            next("0 9 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z"),
            utc("2026-03-28T08:00:00Z")
        );
        assert_eq!(
            next("0 9 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z"),
            utc("2026-10-25T08:00:00Z")
        );
    }

    #[test]
    fn a_skipped_local_time_fires_once_just_after_the_gap() {
        // New York 2026-03-08: 02:00-02:59 does not exist.
        let first = next("30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z");
        assert_eq!(first, utc("2026-03-08T07:00:00Z")); // 03:00 EDT
        let second = next("30 2 * * *", "America/New_York", "2026-03-08T07:00:00Z");
        assert_eq!(second, utc("2026-03-09T06:30:00Z")); // 02:30 EDT the next day
        // Sydney 2026-10-04: 02:00-02:59 does not exist.
        let sydney = next("30 2 * * *", "Australia/Sydney", "2026-10-03T14:00:00Z");
        assert_eq!(sydney, utc("2026-10-03T16:00:00Z")); // 03:00 AEDT
    }

    #[test]
    fn a_repeated_local_time_fires_once() {
        // New York 2026-11-01: 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST).
        let first = next("30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z");
        assert_eq!(first, utc("2026-11-01T05:30:00Z"));
        let second = next("30 1 * * *", "America/New_York", "2026-11-01T05:30:00Z");
        assert_eq!(second, utc("2026-11-02T06:30:00Z"));
        // Sydney 2026-04-05: 02:30 happens at 15:30Z (AEDT) and again at 16:30Z (AEST).
        let first = next("30 2 * * *", "Australia/Sydney", "2026-04-04T14:00:00Z");
        assert_eq!(first, utc("2026-04-04T15:30:00Z"));
        let second = next("30 2 * * *", "Australia/Sydney", "2026-04-04T15:30:00Z");
        assert_eq!(second, utc("2026-04-05T16:30:00Z"));
    }

    #[test]
    fn asked_inside_a_repeated_hour_the_next_firing_is_in_the_future() {
        // New York 2026-11-01, 01:00-01:59 twice: EDT (05:00Z-05:59Z), then EST (06:00Z-06:59Z).
        // Asked in the second pass, every local time of the hour already fired in the first.
        for (schedule, now, expected) in [
            ("30 1 * * *", "2026-11-01T06:40:00Z", "2026-11-02T06:30:00Z"),
            ("50 1 * * *", "2026-11-01T06:40:00Z", "2026-11-02T06:50:00Z"),
            ("0 * * * *", "2026-11-01T06:10:00Z", "2026-11-01T07:00:00Z"),
            (
                "*/15 * * * *",
                "2026-11-01T06:20:00Z",
                "2026-11-01T07:00:00Z",
            ),
            (
                "*/20 * * * * *",
                "2026-11-01T06:20:00Z",
                "2026-11-01T07:00:00Z",
            ),
            // In the first pass, the hour's later minutes are still ahead.
            ("50 1 * * *", "2026-11-01T05:40:00Z", "2026-11-01T05:50:00Z"),
        ] {
            let found = next(schedule, "America/New_York", now);
            assert_eq!(found, utc(expected), "{schedule} at {now}");
        }
        // Santiago: at 2026-04-05 00:00 -03 (03:00Z) clocks go back to 23:00 -04, so 23:00-23:59
        // of 4 April happens at 02:00Z-02:59Z and again at 03:00Z-03:59Z.
        let found = next("30 23 * * *", "America/Santiago", "2026-04-05T03:45:00Z");
        assert_eq!(found, utc("2026-04-06T03:30:00Z"));
        let found = next("45 23 * * *", "America/Santiago", "2026-04-05T03:15:00Z");
        assert_eq!(found, utc("2026-04-06T03:45:00Z"));
    }

    #[test]
    fn once_finds_the_span_a_day_is_in_and_the_latest_one() {
        let berlin = zone("Europe/Berlin");
        let weekdays = Schedule::parse("30 8 * * 1-5").unwrap();
        // Friday 2026-11-20 to Sunday 2026-11-22 go out on Monday; Thursday on Friday.
        for day in ["2026-11-20", "2026-11-21", "2026-11-22"] {
            let found = weekdays.span_containing(berlin, date(day));
            assert_eq!(found, span("2026-11-20", "2026-11-22"), "{day}");
        }
        let thursday = weekdays.span_containing(berlin, date("2026-11-19"));
        assert_eq!(thursday, Span::day(date("2026-11-19")));
        let weekly = Schedule::parse("0 9 * * 1").unwrap();
        let week = weekly.span_containing(berlin, date("2026-11-18"));
        assert_eq!(week, span("2026-11-16", "2026-11-22"));
        let monthly = Schedule::parse("0 9 1 * *").unwrap();
        let december = monthly.span_containing(berlin, date("2026-12-31"));
        assert_eq!(december, span("2026-12-01", "2026-12-31"));

        // On Monday before 08:30 the last firing was Friday's (Thursday); after, Friday-Sunday.
        let early = weekdays.latest_span(berlin, utc("2026-11-23T07:00:00Z"));
        assert_eq!(early, Span::day(date("2026-11-19")));
        let later = weekdays.latest_span(berlin, utc("2026-11-23T07:31:00Z"));
        assert_eq!(later, span("2026-11-20", "2026-11-22"));
        // Sunday: still Thursday, the last span a firing covered.
        let sunday = weekdays.latest_span(berlin, utc("2026-11-22T12:00:00Z"));
        assert_eq!(sunday, Span::day(date("2026-11-19")));
        let daily = Schedule::parse("0 9 * * *").unwrap();
        let kolkata = zone("Asia/Kolkata");
        let after_nine = daily.latest_span(kolkata, utc("2026-11-25T04:00:00Z"));
        assert_eq!(after_nine, Span::day(date("2026-11-24")));
        let before_nine = daily.latest_span(kolkata, utc("2026-11-25T03:00:00Z"));
        assert_eq!(before_nine, Span::day(date("2026-11-23")));
        // Year end: 1 January's firing covers December.
        let new_year = monthly.latest_span(berlin, utc("2027-01-05T00:00:00Z"));
        assert_eq!(new_year, span("2026-12-01", "2026-12-31"));
    }

    #[test]
    fn fixed_offsets_never_shift() {
        assert_eq!(
            next("0 9 * * *", "-03:30", "2026-03-08T00:00:00Z"),
            utc("2026-03-08T12:30:00Z")
        );
    }

    fn coverage(schedule: &str, zone_name: &str, firing_local: &str) -> Span {
        let zone = zone(zone_name);
        let local: NaiveDateTime = firing_local.parse().unwrap();
        let Zone::Named(tz) = zone else {
            unreachable!()
        };
        let firing = tz
            .from_local_datetime(&local)
            .earliest()
            .unwrap()
            .with_timezone(&Utc);
        Schedule::parse(schedule).unwrap().coverage(zone, firing)
    }

    #[test]
    fn a_firing_covers_every_day_since_the_last_firing_on_an_earlier_date() {
        let daily = coverage("0 9 * * *", "Asia/Kolkata", "2026-11-25T09:00:00");
        assert_eq!(daily, Span::day(date("2026-11-24")));
        // Monday of a weekday schedule: Friday to Sunday, as one digest; Tuesday: Monday.
        let monday = coverage("30 8 * * 1-5", "Europe/Berlin", "2026-11-23T08:30:00");
        assert_eq!(monday, span("2026-11-20", "2026-11-22"));
        assert_eq!(monday.days(), 3);
        let tuesday = coverage("30 8 * * 1-5", "Europe/Berlin", "2026-11-24T08:30:00");
        assert_eq!(tuesday, Span::day(date("2026-11-23")));
        let weekly = coverage("0 9 * * 1", "America/New_York", "2026-11-23T09:00:00");
        assert_eq!(weekly, span("2026-11-16", "2026-11-22"));
        // Month and year ends.
        let monthly = coverage("0 9 1 * *", "Australia/Sydney", "2026-12-01T09:00:00");
        assert_eq!(monthly, span("2026-11-01", "2026-11-30"));
        let new_year = coverage("0 9 1 * *", "Australia/Sydney", "2027-01-01T09:00:00");
        assert_eq!(new_year, span("2026-12-01", "2026-12-31"));
        let leap = coverage("0 9 1 3 *", "Europe/Berlin", "2028-03-01T09:00:00");
        assert_eq!(leap, span("2027-03-01", "2028-02-29"));
        // Many firings a day cover yesterday at each.
        let often = coverage("*/10 * * * * *", "Asia/Kolkata", "2026-11-25T17:42:10");
        assert_eq!(often, Span::day(date("2026-11-24")));
    }

    /// Dates in 2026 whose local midnight a DST change skips.
    fn midnight_gaps(zone: Zone) -> Vec<NaiveDate> {
        date("2026-01-01")
            .iter_days()
            .take(365)
            .filter(|d| zone.local(zone.start_of_day(*d)).time() != NaiveTime::MIN)
            .collect()
    }

    #[test]
    fn a_firing_in_a_midnight_gap_covers_the_day_before_not_two_days_back() {
        for name in ["America/Santiago", "Africa/Cairo", "America/Havana"] {
            let zone = zone(name);
            let gaps = midnight_gaps(zone);
            assert!(!gaps.is_empty(), "{name} has no midnight gap in 2026");
            let daily = Schedule::parse("30 0 * * *").unwrap();
            for gap in gaps {
                let before = gap.pred_opt().unwrap();
                assert!(daily.fires_on(zone, gap), "{name} {gap}");
                let noon = zone.start_of_day(gap) + chrono::Duration::hours(11);
                let firing = daily
                    .next_after(zone, zone.start_of_day(gap) - chrono::Duration::seconds(1))
                    .unwrap();
                assert_eq!(
                    zone.local(firing).date(),
                    gap,
                    "{name}: fires on the gap day"
                );
                assert_eq!(
                    daily.coverage(zone, firing),
                    Span::day(before),
                    "{name} {gap}"
                );
                // The day after the gap covers the gap day itself.
                let next = daily.next_after(zone, noon).unwrap();
                assert_eq!(daily.coverage(zone, next), Span::day(gap), "{name} {gap}");
                // With a weekday field: the previous such weekday, not last week's.
                let weekday = gap.weekday().num_days_from_sunday();
                let weekly = Schedule::parse(&format!("30 0 * * {weekday}")).unwrap();
                let week_before = gap - Days::new(7);
                assert_eq!(
                    weekly.coverage(zone, firing),
                    Span {
                        first: week_before,
                        last: before
                    },
                    "{name} {gap}"
                );
            }
        }
    }

    #[test]
    fn windows_are_exact_on_change_days() {
        let ny = zone("America/New_York");
        let fall = Window::for_date(ny, date("2026-11-01"));
        assert_eq!(
            (fall.start_date(), fall.end_date(), fall.offset_text()),
            (
                "2026-11-01 00:00:00".into(),
                "2026-11-02 00:59:59".into(),
                "-04:00".into()
            )
        );
        let spring = Window::for_date(ny, date("2026-03-08"));
        assert_eq!(
            (spring.start_date(), spring.end_date(), spring.offset_text()),
            (
                "2026-03-08 00:00:00".into(),
                "2026-03-08 22:59:59".into(),
                "-05:00".into()
            )
        );
        let chile = Window::for_date(zone("America/Santiago"), date("2026-09-06"));
        assert_eq!(
            (chile.start_date(), chile.end_date(), chile.offset_text()),
            (
                "2026-09-06 01:00:00".into(),
                "2026-09-06 23:59:59".into(),
                "-03:00".into()
            )
        );
        let weekend = Window::for_span(zone("Asia/Kolkata"), span("2026-11-20", "2026-11-22"));
        assert_eq!(
            (weekend.start_date(), weekend.end_date()),
            ("2026-11-20 00:00:00".into(), "2026-11-22 23:59:59".into())
        );
        for (name, text) in [("+14:00", "+14:00"), ("-12:00", "-12:00")] {
            let w = Window::for_date(zone(name), date("2026-12-31"));
            assert_eq!(
                (w.start_date(), w.end_date(), w.offset_text()),
                (
                    "2026-12-31 00:00:00".into(),
                    "2026-12-31 23:59:59".into(),
                    text.into()
                )
            );
        }
        // Consecutive windows neither overlap nor leave a gap.
        for day in ["2026-03-07", "2026-03-08", "2026-10-31", "2026-11-01"] {
            let this = Window::for_date(ny, date(day));
            let next = Window::for_date(ny, date(day).succ_opt().unwrap());
            assert_eq!(this.end + chrono::Duration::seconds(1), next.start, "{day}");
        }
    }

    #[test]
    fn hour_rows_land_on_the_local_hour_they_were_counted_in() {
        let ny = zone("America/New_York");
        let spring = Window::for_date(ny, date("2026-03-08"));
        let spring_hours: Vec<u8> = (0..23).map(|h| spring.local_hour(ny, h, 0)).collect();
        assert_eq!(&spring_hours[..3], [0, 1, 3]);
        assert_eq!(spring_hours[22], 23);
        assert!(!spring_hours.contains(&2), "02:00 doesn't exist that day");
        let fall = Window::for_date(ny, date("2026-11-01"));
        assert_eq!(fall.local_hour(ny, 0, 0), 0);
        assert_eq!(fall.local_hour(ny, 1, 0), 1);
        assert_eq!(fall.local_hour(ny, 2, 0), 1, "01:00 EST, the repeated hour");
        assert_eq!(fall.local_hour(ny, 23, 0), 22);
        assert_eq!(fall.local_hour(ny, 0, 1), 23, "the second 12 AM row");
        let plain = Window::for_date(zone("Asia/Kolkata"), date("2026-11-24"));
        assert!((0..24).all(|h| plain.local_hour(zone("Asia/Kolkata"), h, 0) == h));
    }

    #[test]
    fn firing_dates_step_a_day_at_a_time_forward() {
        let berlin = zone("Europe/Berlin");
        let every_second = Schedule::parse("* * * * * *").unwrap();
        let dates = |schedule: &Schedule, after: &str, until: &str| -> Vec<NaiveDate> {
            let firings = schedule.firing_dates(berlin, utc(after), utc(until));
            firings.into_iter().map(|(date, _)| date).collect()
        };
        let dates_every_second = dates(
            &every_second,
            "2026-10-23T12:00:00Z",
            "2026-10-26T12:00:00Z",
        );
        assert_eq!(
            dates_every_second,
            [
                date("2026-10-23"),
                date("2026-10-24"),
                date("2026-10-25"),
                date("2026-10-26")
            ]
        );
        let weekdays = Schedule::parse("30 8 * * 1-5").unwrap();
        let weekday_dates = dates(&weekdays, "2026-11-20T12:00:00Z", "2026-11-24T12:00:00Z");
        assert_eq!(weekday_dates, [date("2026-11-23"), date("2026-11-24")]);
        // The next new span of a seconds-level schedule is tomorrow's first firing.
        let next = every_second
            .next_new_date(berlin, utc("2026-11-24T12:00:00Z"))
            .unwrap();
        assert_eq!(next, utc("2026-11-24T23:00:00Z"));
        let daily = Schedule::parse("0 9 * * *").unwrap();
        assert_eq!(
            daily.next_new_date(berlin, utc("2026-11-24T07:00:00Z")),
            Some(utc("2026-11-24T08:00:00Z"))
        );
    }

    #[test]
    fn fixed_offsets_parse_strictly() {
        assert_eq!(
            parse_fixed_offset("+05:30").unwrap().local_minus_utc(),
            19800
        );
        assert_eq!(
            parse_fixed_offset("-03:30").unwrap().local_minus_utc(),
            -12600
        );
        assert!(parse_fixed_offset("05:30").is_none());
        assert!(parse_fixed_offset("+5:30").is_none());
        assert!(parse_fixed_offset("+05:60").is_none());
        assert!(parse_fixed_offset("-12:00").is_some() && parse_fixed_offset("+14:00").is_some());
        assert!(parse_fixed_offset("-12:30").is_none() && parse_fixed_offset("+14:01").is_none());
    }
}
