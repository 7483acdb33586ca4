//! Rank: a day's reports become the digest model, the one struct every template and the generic
//! webhook see. Pure: same report in, same digest out.

use std::cmp::Reverse;
use std::collections::HashMap;

use serde::Serialize;

use crate::fetch::{ChatSource, CountryRow, DayReport};
use crate::insight::{Moves, Unusual};
use crate::schedule::{Comparison, Span, Window, Zone};

/// How many peak hours a digest names.
const PEAK_HOURS: usize = 3;

/// Who the digest is for; the part of a team's config the digest shows.
#[derive(Debug, Clone)]
pub struct Audience<'a> {
    pub team: &'a str,
    pub account_id: &'a str,
    pub zone: Zone,
    pub top: usize,
}

/// The digest. Its JSON form is the generic webhook's public contract (README, "Generic webhook").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    pub team: String,
    pub account_id: String,
    /// The first local day the digest covers, `YYYY-MM-DD`.
    pub date: String,
    /// The last local day it covers: `date` itself for a daily digest.
    pub end_date: String,
    /// How many days it covers.
    pub days: u32,
    pub timezone: String,
    /// The offset the API was asked to read the day in, `+05:30`.
    pub utc_offset: String,
    /// The window as sent to the API.
    pub window: WindowView,
    pub totals: Totals,
    /// The earlier spans this one is compared with; each `null` when turned off or when its
    /// report could not be had.
    pub compare: Comparisons,
    pub countries: Vec<Country>,
    pub peak_hours: Vec<PeakHour>,
    /// Activity per local hour of day: index 0 is 00:00-00:59 local time. A 25-hour day adds
    /// both of its repeated hours into one index; a 23-hour day leaves its skipped hour at 0.
    pub hours: [u64; 24],
    pub pages: Vec<Page>,
    pub referrers: Vec<Referrer>,
    /// How many entries each list left out because of `top`.
    pub more: More,
    /// True when nobody visited: every list is empty and every total zero.
    pub is_empty: bool,
    /// The rows that drove each headline total's change against `compare.previous`.
    pub moved: Moves,
    /// The totals far from what their weekday (or the weeks before) usually has.
    pub unusual: Vec<Unusual>,
    /// True when the data looked incomplete and was still changing when the digest was sent.
    pub provisional: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowView {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparisons {
    pub previous: Option<Compared>,
    pub last_week: Option<Compared>,
}

/// An earlier span's dates and totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compared {
    pub date: String,
    pub end_date: String,
    pub totals: Totals,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub visitors: u64,
    pub chats: u64,
    pub cases: u64,
    pub emails: u64,
    pub cobrowse: u64,
    pub calls: u64,
    pub countries: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Country {
    pub rank: usize,
    pub name: String,
    pub cca3: String,
    pub visitors: u64,
    pub chats: u64,
    /// Percent of the day's visitors, 0-100, two decimals.
    pub share: f64,
    /// Its rank in the previous span's whole ranking; None where it wasn't there (new) or
    /// there is no comparison.
    pub previous_rank: Option<usize>,
    pub last_week_rank: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeakHour {
    pub hour: u8,
    pub label: String,
    pub visits: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub rank: usize,
    pub url: String,
    pub chats: u64,
    pub percentage: f64,
    pub previous_rank: Option<usize>,
    pub last_week_rank: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Referrer {
    pub rank: usize,
    pub source: String,
    pub chats: u64,
    pub percentage: f64,
    pub previous_rank: Option<usize>,
    pub last_week_rank: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct More {
    pub countries: usize,
    pub pages: usize,
    pub referrers: usize,
}

pub fn rank(audience: &Audience, window: &Window, report: &DayReport) -> Digest {
    let top = audience.top.max(1);

    let totals = totals(report);

    let countries = by_visitors(&report.countries);
    let countries: Vec<Country> = countries
        .into_iter()
        .take(top)
        .enumerate()
        .map(|(i, c)| Country {
            rank: i + 1,
            name: c.name.clone(),
            cca3: c.cca3.clone(),
            visitors: c.visitors,
            chats: c.chats,
            share: percent(c.visitors, totals.visitors),
            previous_rank: None,
            last_week_rank: None,
        })
        .collect();

    let mut hours = [0u64; 24];
    let mut labels: [Option<&str>; 24] = [None; 24];
    let mut seen = [0usize; 24];
    for row in &report.hours {
        let nth = seen[row.hour as usize];
        seen[row.hour as usize] += 1;
        let local = window.local_hour(audience.zone, row.hour, nth) as usize;
        hours[local] = hours[local].saturating_add(row.activity);
        // The API's label names the hour on the window's offset; after a change that is
        // another local hour, so only a label that agrees with it is kept.
        if row.hour as usize == local {
            labels[local].get_or_insert(&row.label);
        }
    }
    let mut busiest: Vec<u8> = (0..24).filter(|&h| hours[h as usize] > 0).collect();
    busiest.sort_by_key(|&h| (Reverse(hours[h as usize]), h));
    let peak_hours = busiest
        .into_iter()
        .take(PEAK_HOURS.min(top))
        .map(|hour| PeakHour {
            hour,
            label: labels[hour as usize]
                .map(str::to_owned)
                .unwrap_or_else(|| clock_label(hour)),
            visits: hours[hour as usize],
        })
        .collect();

    let pages: Vec<Page> = by_chats(&report.pages, top)
        .map(|(rank, p)| Page {
            rank,
            url: p.text.clone(),
            chats: p.chats,
            percentage: p.percentage,
            previous_rank: None,
            last_week_rank: None,
        })
        .collect();
    let referrers: Vec<Referrer> = by_chats(&report.referrers, top)
        .map(|(rank, r)| Referrer {
            rank,
            source: r.text.clone(),
            chats: r.chats,
            percentage: r.percentage,
            previous_rank: None,
            last_week_rank: None,
        })
        .collect();

    let more = More {
        countries: report.countries.len() - countries.len(),
        pages: report.pages.len() - pages.len(),
        referrers: report.referrers.len() - referrers.len(),
    };
    let is_empty = totals.visitors == 0
        && totals.chats == 0
        && countries.is_empty()
        && pages.is_empty()
        && referrers.is_empty()
        && hours.iter().all(|&h| h == 0);

    Digest {
        team: audience.team.to_owned(),
        account_id: audience.account_id.to_owned(),
        date: window.span.first.to_string(),
        end_date: window.span.last.to_string(),
        days: window.span.days(),
        timezone: audience.zone.to_string(),
        utc_offset: window.offset_text(),
        window: WindowView {
            start: window.start_date(),
            end: window.end_date(),
        },
        totals,
        compare: Comparisons::default(),
        countries,
        peak_hours,
        hours,
        pages,
        referrers,
        more,
        is_empty,
        moved: Moves::default(),
        unusual: Vec::new(),
        provisional: false,
    }
}

/// Sets the digest beside an earlier span's report: that span's totals, and each listed
/// entry's rank in its whole ranking (not just its top), by the same rules.
pub fn compare(digest: &mut Digest, which: Comparison, span: Span, report: &DayReport) {
    let compared = Compared {
        date: span.first.to_string(),
        end_date: span.last.to_string(),
        totals: totals(report),
    };
    let countries: HashMap<&str, usize> = by_visitors(&report.countries)
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i + 1))
        .collect();
    let ranks = |rows: &[ChatSource]| -> HashMap<String, usize> {
        by_chats(rows, usize::MAX)
            .map(|(rank, row)| (row.text.clone(), rank))
            .collect()
    };
    let (pages, referrers) = (ranks(&report.pages), ranks(&report.referrers));
    let slot =
        |previous: &mut Option<usize>, last_week: &mut Option<usize>, rank: Option<usize>| {
            match which {
                Comparison::Previous => *previous = rank,
                Comparison::LastWeek => *last_week = rank,
            }
        };
    for c in &mut digest.countries {
        slot(
            &mut c.previous_rank,
            &mut c.last_week_rank,
            countries.get(c.name.as_str()).copied(),
        );
    }
    for p in &mut digest.pages {
        slot(
            &mut p.previous_rank,
            &mut p.last_week_rank,
            pages.get(&p.url).copied(),
        );
    }
    for r in &mut digest.referrers {
        slot(
            &mut r.previous_rank,
            &mut r.last_week_rank,
            referrers.get(&r.source).copied(),
        );
    }
    match which {
        Comparison::Previous => digest.compare.previous = Some(compared),
        Comparison::LastWeek => digest.compare.last_week = Some(compared),
    }
}

/// Sums over all countries.
fn totals(report: &DayReport) -> Totals {
    let mut totals = Totals {
        countries: report.countries.len(),
        ..Totals::default()
    };
    for c in &report.countries {
        // Saturating: 8 MiB of hostile rows can add up past u64.
        totals.visitors = totals.visitors.saturating_add(c.visitors);
        totals.chats = totals.chats.saturating_add(c.chats);
        totals.cases = totals.cases.saturating_add(c.cases);
        totals.emails = totals.emails.saturating_add(c.emails);
        totals.cobrowse = totals.cobrowse.saturating_add(c.cobrowse);
        totals.calls = totals.calls.saturating_add(c.calls);
    }
    totals
}

/// Countries by visitors, ties by chats, then name.
fn by_visitors(rows: &[CountryRow]) -> Vec<&CountryRow> {
    let mut rows: Vec<_> = rows.iter().collect();
    rows.sort_by(|a, b| {
        (Reverse(a.visitors), Reverse(a.chats), &a.name).cmp(&(
            Reverse(b.visitors),
            Reverse(b.chats),
            &b.name,
        ))
    });
    rows
}

/// Ranked by chats, ties by text; numbered from 1.
fn by_chats(rows: &[ChatSource], top: usize) -> impl Iterator<Item = (usize, &ChatSource)> {
    let mut rows: Vec<_> = rows.iter().collect();
    rows.sort_by(|a, b| (Reverse(a.chats), &a.text).cmp(&(Reverse(b.chats), &b.text)));
    rows.into_iter()
        .take(top)
        .enumerate()
        .map(|(i, r)| (i + 1, r))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

/// The API's own label style, for an hour it did not label.
fn clock_label(hour: u8) -> String {
    let twelve = if hour.is_multiple_of(12) {
        12
    } else {
        hour % 12
    };
    format!("{twelve:02} {}", if hour < 12 { "AM" } else { "PM" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::{CountryRow, HourRow};

    fn country(name: &str, visitors: u64, chats: u64) -> CountryRow {
        CountryRow {
            name: name.into(),
            cca3: name[..3].to_uppercase(),
            visitors,
            chats,
            cases: 1,
            emails: 2,
            cobrowse: 3,
            calls: 4,
        }
    }

    fn source(text: &str, chats: u64) -> ChatSource {
        ChatSource {
            text: text.into(),
            chats,
            percentage: 10.0,
        }
    }

    fn hour(hour: u8, activity: u64) -> HourRow {
        HourRow {
            hour,
            label: clock_label(hour),
            activity,
        }
    }

    fn digest(report: &DayReport, top: usize) -> Digest {
        let audience = Audience {
            team: "t",
            account_id: "acme",
            zone: Zone::parse("Asia/Kolkata").unwrap(),
            top,
        };
        let zone = audience.zone;
        let window = Window::for_date(zone, "2021-03-18".parse().unwrap());
        rank(&audience, &window, report)
    }

    #[test]
    fn ranks_beside_earlier_spans_say_up_down_new_and_unchanged_from_the_whole_ranking() {
        let today = DayReport {
            countries: vec![
                country("India", 90, 9),
                country("Brazil", 50, 5),
                country("Chile", 40, 4),
                country("Denmark", 30, 3),
            ],
            pages: vec![source("/pricing", 9), source("/new", 5)],
            referrers: vec![source("google", 7)],
            ..DayReport::default()
        };
        let yesterday = DayReport {
            countries: vec![
                country("Brazil", 80, 8),
                country("India", 70, 7),
                country("Chile", 60, 6),
                country("Egypt", 20, 2),
                country("Fiji", 10, 1),
                // Ranked 6th there, beyond any top: still its rank.
                country("Denmark", 5, 1),
            ],
            pages: vec![source("/pricing", 3), source("/old", 9)],
            referrers: vec![source("google", 1)],
            ..DayReport::default()
        };
        let mut digest = digest(&today, 3);
        let earlier = |d: &str| Span::day(d.parse().unwrap());
        compare(
            &mut digest,
            Comparison::Previous,
            earlier("2021-03-17"),
            &yesterday,
        );
        let ranks = |d: &Digest| -> Vec<(String, Option<usize>, Option<usize>)> {
            d.countries
                .iter()
                .map(|c| (c.name.clone(), c.previous_rank, c.last_week_rank))
                .collect()
        };
        assert_eq!(
            ranks(&digest),
            [
                ("India".into(), Some(2), None),  // up one
                ("Brazil".into(), Some(1), None), // down one
                ("Chile".into(), Some(3), None),  // unchanged
            ]
        );
        assert_eq!(digest.pages[0].previous_rank, Some(2));
        assert_eq!(digest.pages[1].previous_rank, None, "new");
        assert_eq!(digest.referrers[0].previous_rank, Some(1));
        let previous = digest.compare.previous.clone().unwrap();
        assert_eq!(previous.date, "2021-03-17");
        assert_eq!(previous.totals.visitors, 245);
        assert_eq!(previous.totals.chats, 25);
        assert_eq!(previous.totals.countries, 6);
        assert_eq!(previous.totals.calls, 24);
        assert_eq!(digest.compare.last_week, None);

        // Last week's slot is its own; previous is untouched.
        compare(
            &mut digest,
            Comparison::LastWeek,
            earlier("2021-03-11"),
            &DayReport::default(),
        );
        assert_eq!(ranks(&digest)[0], ("India".into(), Some(2), None));
        assert_eq!(
            digest.compare.last_week.as_ref().unwrap().totals.visitors,
            0
        );
        let json = serde_json::to_value(&digest).unwrap();
        assert_eq!(json["compare"]["last_week"]["date"], "2021-03-11");
        assert_eq!(json["countries"][0]["previous_rank"], 2);
        assert!(json["countries"][0]["last_week_rank"].is_null());
    }

    #[test]
    fn countries_rank_by_visitors_then_chats_then_name() {
        let report = DayReport {
            countries: vec![
                country("Benin", 1, 2),
                country("India", 100, 158),
                country("Jordan", 1, 1),
                country("Burkina Faso", 1, 1),
                country("United States", 27, 35),
            ],
            ..DayReport::default()
        };
        let d = digest(&report, 4);
        let names: Vec<_> = d.countries.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["India", "United States", "Benin", "Burkina Faso"]);
        assert_eq!(d.countries[0].rank, 1);
        assert_eq!(d.countries[0].share, 76.92);
        assert_eq!(d.more.countries, 1);
        assert_eq!(d.totals.visitors, 130);
        assert_eq!(d.totals.chats, 197);
        assert_eq!(d.totals.countries, 5);
        assert_eq!(d.totals.calls, 20);
    }

    #[test]
    fn peak_hours_are_the_busiest_three_earlier_first_on_ties() {
        let report = DayReport {
            hours: vec![hour(5, 3), hour(13, 9), hour(0, 9), hour(22, 3), hour(7, 0)],
            ..DayReport::default()
        };
        let d = digest(&report, 5);
        let peaks: Vec<_> = d.peak_hours.iter().map(|p| (p.hour, p.visits)).collect();
        assert_eq!(peaks, [(0, 9), (13, 9), (5, 3)]);
        assert_eq!(d.peak_hours[0].label, "12 AM");
        assert_eq!(d.hours[13], 9);
        assert_eq!(d.hours.iter().sum::<u64>(), 24);
    }

    #[test]
    fn hours_without_activity_are_never_peaks() {
        let report = DayReport {
            hours: vec![hour(9, 4), hour(10, 0)],
            ..DayReport::default()
        };
        assert_eq!(digest(&report, 5).peak_hours.len(), 1);
    }

    #[test]
    fn pages_and_referrers_rank_by_chats_then_text_capped_by_top() {
        let report = DayReport {
            pages: vec![source("/b", 5), source("/a", 5), source("/c", 9)],
            referrers: vec![source("x", 1), source("y", 2)],
            ..DayReport::default()
        };
        let d = digest(&report, 2);
        let urls: Vec<_> = d.pages.iter().map(|p| p.url.as_str()).collect();
        assert_eq!(urls, ["/c", "/a"]);
        assert_eq!(d.more.pages, 1);
        assert_eq!(d.referrers[0].source, "y");
        assert_eq!(d.referrers[1].rank, 2);
    }

    #[test]
    fn an_empty_day_is_flagged() {
        let d = digest(&DayReport::default(), 5);
        assert!(d.is_empty);
        let busy = DayReport {
            countries: vec![country("India", 1, 0)],
            ..DayReport::default()
        };
        assert!(!digest(&busy, 5).is_empty);
    }
}
