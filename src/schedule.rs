//! When: the team's timezone, its cron schedule, the next firing, and the reporting window.
//!
//! Everything here is a pure function of its arguments (a zone, a schedule, an instant or a
//! date), so DST changes are unit-tested without clocks.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Days, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;
use croner::Cron;

/// A team's timezone: an IANA zone, or a fixed offset for teams that want one.
#[derive(Clone, Copy, PartialEq, Eq)]
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
        let Zone::Named(tz) = self else {
            let Zone::Fixed(offset) = self else {
                unreachable!()
            };
            return (date.and_time(NaiveTime::MIN) - offset).and_utc();
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

/// The day a digest covers, as the API is asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub date: NaiveDate,
    pub offset: FixedOffset,
}

impl Window {
    /// The window for a local date. The API reads both ends in one fixed offset, so a
    /// DST-change day sends the offset in force when the day starts: the window begins at
    /// local midnight and spans 24 real hours. On a 23-hour day it runs one hour into the
    /// next day; on a 25-hour day it stops an hour before the next midnight.
    pub fn for_date(zone: Zone, date: NaiveDate) -> Window {
        Window {
            date,
            offset: zone.offset_at(zone.start_of_day(date)),
        }
    }

    /// Yesterday's window relative to `now` in the team's zone.
    pub fn yesterday(zone: Zone, now: DateTime<Utc>) -> Window {
        let today = zone.local(now).date();
        Window::for_date(zone, today - Days::new(1))
    }

    pub fn start_date(&self) -> String {
        format!("{} 00:00:00", self.date.format("%Y-%m-%d"))
    }

    pub fn end_date(&self) -> String {
        format!("{} 23:59:59", self.date.format("%Y-%m-%d"))
    }

    pub fn offset_text(&self) -> String {
        format_offset(self.offset)
    }
}

/// A cron schedule: 5 fields, or 6 with seconds first, read in the team's timezone.
#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    text: String,
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
        Ok(Schedule {
            cron,
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first firing strictly after `after`. A local time that a spring-forward change skips
    /// fires once, at the first instant after the gap; one that a fall-back change repeats
    /// fires once, at its first occurrence.
    pub fn next_after(&self, zone: Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match zone {
            Zone::Named(tz) => self.next_in(&after.with_timezone(&tz)),
            Zone::Fixed(offset) => self.next_in(&after.with_timezone(&offset)),
        }
    }

    fn next_in<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(after, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest firing at or before `at`, if it lies within `horizon`.
    pub fn last_at_or_before(
        &self,
        zone: Zone,
        at: DateTime<Utc>,
        horizon: chrono::Duration,
    ) -> Option<DateTime<Utc>> {
        let last = match zone {
            Zone::Named(tz) => self.previous_in(&at.with_timezone(&tz)),
            Zone::Fixed(offset) => self.previous_in(&at.with_timezone(&offset)),
        }?;
        (at - last <= horizon).then_some(last)
    }

    fn previous_in<Z: TimeZone>(&self, at: &DateTime<Z>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(at, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
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
        assert_eq!(ny.date, date("2026-07-14"));
        let kolkata = Window::yesterday(zone("Asia/Kolkata"), now);
        assert_eq!(kolkata.date, date("2026-07-15"));
        assert_eq!(kolkata.start_date(), "2026-07-15 00:00:00");
        assert_eq!(kolkata.end_date(), "2026-07-15 23:59:59");
        let kiritimati = Window::yesterday(zone("Pacific/Kiritimati"), utc("2026-07-15T10:00:00Z"));
        assert_eq!(kiritimati.date, date("2026-07-15"));
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
    fn fixed_offsets_never_shift() {
        assert_eq!(
            next("0 9 * * *", "-03:30", "2026-03-08T00:00:00Z"),
            utc("2026-03-08T12:30:00Z")
        );
    }

    #[test]
    fn the_last_firing_is_found_within_the_horizon() {
        let schedule = Schedule::parse("0 9 * * *").unwrap();
        let berlin = zone("Europe/Berlin");
        let at = utc("2026-07-15T10:00:00Z");
        let last = schedule.last_at_or_before(berlin, at, chrono::Duration::hours(12));
        assert_eq!(last, Some(utc("2026-07-15T07:00:00Z")));
        let none = schedule.last_at_or_before(berlin, at, chrono::Duration::hours(2));
        assert_eq!(none, None);
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
