//! Insight, beside rank: which rows moved a headline total against the previous span, and
//! whether a total is unusual for its weekday. Pure: reports and earlier totals in, the
//! digest's `moved` and `unusual` out.
//!
//! The unusual-day rule is meant to stay quiet on ordinary days at any volume, 3 visitors a
//! day or 5,000: counts are variance-stabilised (Anscombe's 2·√(v + 3/8), under which Poisson
//! noise has a spread of about 1 at any mean), compared with the same weekday's median, and
//! scaled by a robust spread (the pooled median absolute deviation) that is never taken below
//! Poisson's own. A percentage rule ("±50%") fires on a quarter of normal days at 12 a day.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Serialize;

use crate::fetch::{ChatSource, DayReport};

/// A total moved when it changed by at least this share of the earlier total...
const MOVED_SHARE: f64 = 0.10;
/// ...and by at least this many.
const MOVED_AT_LEAST: u64 = 5;
/// How many rows a "what moved" line names.
const DRIVERS: usize = 3;

/// Days of history a daily flag looks at: eight of each weekday.
pub const BASELINE_DAYS: u32 = 56;
/// Weeks of history a weekly flag looks at.
pub const BASELINE_WEEKS: u32 = 8;
/// Of the eight earlier values of the same weekday (or week), how many are needed.
const AT_LEAST_VALUES: usize = 6;
/// How far from the baseline, in robust standard deviations, a value is unusual.
const THRESHOLD: f64 = 3.5;
/// The spread is never taken below Poisson noise's, whatever the history's looks like.
const SCALE_FLOOR: f64 = 1.0;
/// The median absolute deviation as a standard deviation (1.4826), widened by 15% because it
/// is measured from few values.
const MAD_TO_SCALE: f64 = 1.4826 * 1.15;
/// A zero day is "none recorded" rather than low traffic when the weekday usually has this many.
const NONE_RECORDED_FROM: f64 = 10.0;

/// What moved the two headline totals against the previous span; each `None` when it moved
/// less than both thresholds, or there is no previous span.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Moves {
    pub visitors: Option<Moved>,
    pub chats: Option<Moved>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moved {
    /// The comparison it moved against: `previous`.
    pub against: &'static str,
    /// The total now, minus the earlier total.
    pub change: i64,
    /// The earlier total.
    pub before: u64,
    /// Up to three rows that moved the same way as the total, the largest change first.
    pub drivers: Vec<Driver>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Driver {
    /// Which list the row is from: `countries`, `pages` or `referrers`.
    pub list: &'static str,
    pub name: String,
    pub change: i64,
}

/// Which headline total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Visitors,
    Chats,
}

impl Metric {
    pub const BOTH: [Metric; 2] = [Metric::Visitors, Metric::Chats];

    pub fn of(self, visitors: u64, chats: u64) -> u64 {
        match self {
            Metric::Visitors => visitors,
            Metric::Chats => chats,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    High,
    Low,
    /// A zero where there are usually many: tracking broken, or the data not in yet.
    NoneRecorded,
}

/// A total flagged as unusual.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unusual {
    pub metric: Metric,
    pub direction: Direction,
    pub value: u64,
    /// The median of the same weekday's (or the earlier weeks') values, rounded.
    pub usual: u64,
    /// The weekday it is unusual for, `Tuesday`; `null` for a week.
    pub weekday: Option<String>,
    /// How far from the baseline, in robust standard deviations, to one decimal.
    pub score: f64,
}

/// What moved each total of `now` against the `before` span's full report.
pub fn moved(now: &DayReport, before: &DayReport) -> Moves {
    let (visitors_now, chats_now) = headline(now);
    let (visitors_before, chats_before) = headline(before);
    let visitors = change(visitors_now, visitors_before).map(|change| {
        let countries = differences(countries(now), countries(before));
        Moved {
            against: "previous",
            change,
            before: visitors_before,
            drivers: drivers("countries", &countries, change),
        }
    });
    let chats = change(chats_now, chats_before).map(|change| {
        let referrers = differences(chats_of(&now.referrers), chats_of(&before.referrers));
        let referrers = drivers("referrers", &referrers, change);
        let pages = differences(chats_of(&now.pages), chats_of(&before.pages));
        let pages = drivers("pages", &pages, change);
        let weight = |d: &[Driver]| d.iter().map(|d| d.change.unsigned_abs()).sum::<u64>();
        Moved {
            against: "previous",
            change,
            before: chats_before,
            drivers: if weight(&pages) > weight(&referrers) {
                pages
            } else {
                referrers
            },
        }
    });
    Moves { visitors, chats }
}

/// Total visitors and chats, summed over the countries as the digest's totals are.
pub fn headline(report: &DayReport) -> (u64, u64) {
    report.countries.iter().fold((0, 0), |(v, c), row| {
        (v.saturating_add(row.visitors), c.saturating_add(row.chats))
    })
}

fn countries(report: &DayReport) -> impl Iterator<Item = (&str, u64)> {
    report
        .countries
        .iter()
        .map(|c| (c.name.as_str(), c.visitors))
}

fn chats_of(rows: &[ChatSource]) -> impl Iterator<Item = (&str, u64)> {
    rows.iter().map(|s| (s.text.as_str(), s.chats))
}

/// `now − before` when it is at least [`MOVED_AT_LEAST`] and [`MOVED_SHARE`] of `before`.
fn change(now: u64, before: u64) -> Option<i64> {
    let change = signed(now).saturating_sub(signed(before));
    let size = change.unsigned_abs();
    (size >= MOVED_AT_LEAST && size as f64 >= MOVED_SHARE * before as f64).then_some(change)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Each row's count now minus before, rows missing on one side counting 0 there (new and
/// vanished rows); a name listed twice counts once, summed.
fn differences<'a>(
    now: impl Iterator<Item = (&'a str, u64)>,
    before: impl Iterator<Item = (&'a str, u64)>,
) -> HashMap<&'a str, i64> {
    let mut changes: HashMap<&str, i64> = HashMap::new();
    for (name, n) in now {
        let slot = changes.entry(name).or_default();
        *slot = slot.saturating_add(signed(n));
    }
    for (name, n) in before {
        let slot = changes.entry(name).or_default();
        *slot = slot.saturating_sub(signed(n));
    }
    changes
}

/// The rows that moved the way `total` did, largest first (ties by name), at most [`DRIVERS`].
fn drivers(list: &'static str, changes: &HashMap<&str, i64>, total: i64) -> Vec<Driver> {
    let mut same_way: Vec<(&str, i64)> = changes
        .iter()
        .filter(|&(_, &c)| c != 0 && (c > 0) == (total > 0))
        .map(|(&name, &c)| (name, c))
        .collect();
    same_way.sort_by(|a, b| (b.1.unsigned_abs(), a.0).cmp(&(a.1.unsigned_abs(), b.0)));
    same_way
        .into_iter()
        .take(DRIVERS)
        .map(|(name, change)| Driver {
            list,
            name: name.to_owned(),
            change,
        })
        .collect()
}

/// Anscombe's transform: Poisson counts of any mean get a spread of about 1.
fn stabilised(v: u64) -> f64 {
    2.0 * (v as f64 + 3.0 / 8.0).sqrt()
}

/// The median; an even count averages the middle two. `None` for no values.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Whether `value`, a daily total of `metric` on `day`, is unusual against `history`: the
/// daily totals of the [`BASELINE_DAYS`] before it (others are ignored), provisional days left
/// out by the caller. `None` when it isn't, or when fewer than six of the eight earlier
/// same weekdays are known.
pub fn unusual_day(
    metric: Metric,
    day: NaiveDate,
    value: u64,
    history: &[(NaiveDate, u64)],
) -> Option<Unusual> {
    let earliest = day - chrono::Days::new(u64::from(BASELINE_DAYS));
    let known: Vec<(Weekday, u64)> = history
        .iter()
        .filter(|(d, _)| (earliest..day).contains(d))
        .map(|&(d, v)| (d.weekday(), v))
        .collect();
    let same_weekday: Vec<u64> = known
        .iter()
        .filter(|(w, _)| *w == day.weekday())
        .map(|&(_, v)| v)
        .collect();
    if same_weekday.len() < AT_LEAST_VALUES {
        return None;
    }
    // Every day's distance from its own weekday's median, pooled: seven weekdays' worth of
    // spread, where one weekday alone has eight values at most.
    let mut weekday_medians: HashMap<Weekday, f64> = HashMap::new();
    for weekday in known.iter().map(|(w, _)| *w) {
        weekday_medians.entry(weekday).or_insert_with(|| {
            let mut ts: Vec<f64> = known
                .iter()
                .filter(|(w, _)| *w == weekday)
                .map(|&(_, v)| stabilised(v))
                .collect();
            median(&mut ts).expect("the weekday has a value")
        });
    }
    // A weekday known once is its own median: its zero distance says nothing of the spread,
    // and a new team's few days of history would count it as calm.
    let known_twice = |w: &Weekday| known.iter().filter(|(k, _)| k == w).nth(1).is_some();
    let mut deviations: Vec<f64> = known
        .iter()
        .filter(|(w, _)| known_twice(w))
        .map(|(w, v)| (stabilised(*v) - weekday_medians[w]).abs())
        .collect();
    let spread = median(&mut deviations).expect("there are values");
    let weekday = weekday_name(day.weekday());
    judge(metric, value, &same_weekday, spread, 3, Some(weekday))
}

/// Whether `value`, a week's total of `metric`, is unusual against `weeks`: the totals of the
/// [`BASELINE_WEEKS`] weeks before it that are known. `None` when it isn't, or fewer than six
/// are known.
pub fn unusual_week(metric: Metric, value: u64, weeks: &[u64]) -> Option<Unusual> {
    if weeks.len() < AT_LEAST_VALUES {
        return None;
    }
    let mut ts: Vec<f64> = weeks.iter().map(|&v| stabilised(v)).collect();
    let baseline = median(&mut ts).expect("there are weeks");
    let mut deviations: Vec<f64> = ts.iter().map(|t| (t - baseline).abs()).collect();
    let spread = median(&mut deviations).expect("there are weeks");
    judge(metric, value, weeks, spread, 5, None)
}

/// The rule's last steps, shared by days and weeks: `earlier` are the values the baseline is
/// the median of, `spread` the median absolute deviation in transformed units, `at_least`
/// the smallest difference from the usual value worth a word.
fn judge(
    metric: Metric,
    value: u64,
    earlier: &[u64],
    spread: f64,
    at_least: u64,
    weekday: Option<&str>,
) -> Option<Unusual> {
    let mut ts: Vec<f64> = earlier.iter().map(|&v| stabilised(v)).collect();
    let baseline = median(&mut ts)?;
    let mut raw: Vec<f64> = earlier.iter().map(|&v| v as f64).collect();
    let usual = median(&mut raw)?;
    let scale = (MAD_TO_SCALE * spread).max(SCALE_FLOOR);
    let z = (stabilised(value) - baseline) / scale;
    let difference = value as f64 - usual;
    let direction = if value == 0 && usual >= NONE_RECORDED_FROM {
        Direction::NoneRecorded
    } else if z >= THRESHOLD && difference >= at_least as f64 {
        Direction::High
    } else if z <= -THRESHOLD && -difference >= at_least as f64 {
        Direction::Low
    } else {
        return None;
    };
    Some(Unusual {
        metric,
        direction,
        value,
        usual: usual.round() as u64,
        weekday: weekday.map(str::to_owned),
        score: (z * 10.0).round() / 10.0,
    })
}

fn weekday_name(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

#[cfg(test)]
mod tests;
