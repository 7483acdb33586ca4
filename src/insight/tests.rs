use super::*;
use crate::fetch::{ChatSource, CountryRow, DayReport};

fn country(name: &str, visitors: u64, chats: u64) -> CountryRow {
    CountryRow {
        name: name.into(),
        cca3: name[..3].to_uppercase(),
        visitors,
        chats,
        cases: 0,
        emails: 0,
        cobrowse: 0,
        calls: 0,
    }
}

fn sources(rows: &[(&str, u64)]) -> Vec<ChatSource> {
    rows.iter()
        .map(|&(text, chats)| ChatSource {
            text: text.into(),
            chats,
            percentage: 0.0,
        })
        .collect()
}

fn report(
    countries: &[(&str, u64, u64)],
    pages: &[(&str, u64)],
    refs: &[(&str, u64)],
) -> DayReport {
    DayReport {
        countries: countries
            .iter()
            .map(|&(n, v, c)| country(n, v, c))
            .collect(),
        hours: Vec::new(),
        pages: sources(pages),
        referrers: sources(refs),
    }
}

fn named(moved: &Moved) -> Vec<(&str, &str, i64)> {
    moved
        .drivers
        .iter()
        .map(|d| (d.list, d.name.as_str(), d.change))
        .collect()
}

#[test]
fn a_fall_names_the_rows_that_fell_largest_first_including_vanished_ones() {
    let before = report(
        &[
            ("India", 300, 200),
            ("Germany", 100, 50),
            ("Brazil", 40, 10),
            ("Chile", 20, 0),
        ],
        &[],
        &[("https://t.co/", 120), ("google.com", 90), ("bing.com", 40)],
    );
    // India −80, Chile vanished (−20), Germany +10 (the other way), Brazil −25.
    let now = report(
        &[("India", 220, 150), ("Germany", 110, 20), ("Brazil", 15, 0)],
        &[],
        &[("https://t.co/", 50), ("google.com", 60), ("bing.com", 40)],
    );
    let moves = moved(&now, &before);
    let visitors = moves.visitors.unwrap();
    assert_eq!((visitors.change, visitors.before), (-115, 460));
    assert_eq!(
        named(&visitors),
        [
            ("countries", "India", -80),
            ("countries", "Brazil", -25),
            ("countries", "Chile", -20)
        ]
    );
    let chats = moves.chats.unwrap();
    assert_eq!(chats.change, -90);
    // Without pages, the referrers: bing.com didn't move, so two rows.
    assert_eq!(
        named(&chats),
        [
            ("referrers", "https://t.co/", -70),
            ("referrers", "google.com", -30)
        ]
    );
}

#[test]
fn a_rise_names_new_rows_and_leaves_out_those_that_fell() {
    let before = report(&[("India", 10, 4), ("Peru", 5, 0)], &[("/a", 4)], &[]);
    let now = report(
        &[
            ("India", 9, 4),
            ("Japan", 30, 20),
            ("Kenya", 8, 0),
            ("Peru", 5, 0),
        ],
        &[("/a", 4), ("/pricing", 20)],
        &[],
    );
    let moves = moved(&now, &before);
    let visitors = moves.visitors.unwrap();
    assert_eq!(visitors.change, 37);
    assert_eq!(
        named(&visitors),
        [("countries", "Japan", 30), ("countries", "Kenya", 8)]
    );
    // The pages' changes add up to more of the chats' change than the referrers' (none).
    assert_eq!(named(&moves.chats.unwrap()), [("pages", "/pricing", 20)]);
}

#[test]
fn a_total_moves_only_by_ten_percent_and_five() {
    let at = |before: u64, now: u64| {
        let (b, n) = (
            report(&[("India", before, 0)], &[], &[]),
            report(&[("India", now, 0)], &[], &[]),
        );
        moved(&n, &b).visitors.map(|m| m.change)
    };
    // 4 is under 5, however large a share.
    assert_eq!(at(10, 14), None);
    assert_eq!(at(10, 15), Some(5));
    assert_eq!(at(10, 5), Some(-5));
    // 99 of 1,000 is under 10%.
    assert_eq!(at(1000, 1099), None);
    assert_eq!(at(1000, 1100), Some(100));
    assert_eq!(at(1000, 900), Some(-100));
    // From nothing, any 5 is a move.
    assert_eq!(at(0, 5), Some(5));
    // Chats that didn't move are null.
    assert_eq!(
        moved(
            &report(&[("India", 5, 3)], &[], &[]),
            &report(&[("India", 50, 3)], &[], &[])
        )
        .chats,
        None
    );
}

#[test]
fn chats_are_explained_by_referrers_unless_pages_explain_more_and_a_tie_goes_to_referrers() {
    let before = report(
        &[("India", 100, 100)],
        &[("/a", 50), ("/b", 50)],
        &[("x.com", 50), ("y.com", 50)],
    );
    let tie = report(
        &[("India", 100, 80)],
        &[("/a", 40), ("/b", 40)],
        &[("x.com", 30), ("y.com", 50)],
    );
    assert_eq!(
        named(&moved(&tie, &before).chats.unwrap()),
        [("referrers", "x.com", -20)]
    );
    let pages = report(
        &[("India", 100, 80)],
        &[("/a", 39), ("/b", 40)],
        &[("x.com", 30), ("y.com", 50)],
    );
    assert_eq!(
        named(&moved(&pages, &before).chats.unwrap()),
        [("pages", "/a", -11), ("pages", "/b", -10)]
    );
}

/// 56 days before `day`, each valued by `value(days_before, is_same_weekday)`.
fn history(day: NaiveDate, value: impl Fn(u64, bool) -> u64) -> Vec<(NaiveDate, u64)> {
    (1..=56)
        .map(|k| {
            let d = day - chrono::Days::new(k);
            (d, value(k, d.weekday() == day.weekday()))
        })
        .collect()
}

fn tuesday() -> NaiveDate {
    "2026-11-24".parse().unwrap()
}

fn flag(value: u64, history: &[(NaiveDate, u64)]) -> Option<(Direction, u64, f64)> {
    unusual_day(Metric::Visitors, tuesday(), value, history)
        .map(|u| (u.direction, u.usual, u.score))
}

#[test]
fn a_flat_history_flags_at_three_and_a_half_with_the_floor_of_one() {
    // Every day 100: no spread at all, so the scale is the floor, 1.0; t(100) = 20.04.
    let flat = history(tuesday(), |_, _| 100);
    // t(138) = 23.53, z = 3.49: ordinary. t(139) = 23.61, z = 3.57: unusual.
    assert_eq!(flag(138, &flat), None);
    assert_eq!(flag(139, &flat), Some((Direction::High, 100, 3.6)));
    // t(67) = 16.42, z = −3.62: unusual. t(68) = 16.54, z = −3.4996: ordinary.
    assert_eq!(flag(67, &flat), Some((Direction::Low, 100, -3.6)));
    assert_eq!(flag(68, &flat), None);
    let unusual = unusual_day(Metric::Chats, tuesday(), 139, &flat).unwrap();
    assert_eq!(unusual.weekday.as_deref(), Some("Tuesday"));
    assert_eq!(unusual.metric, Metric::Chats);
}

#[test]
fn a_wide_history_widens_the_scale_and_even_counts_average_the_middle_two() {
    // Every weekday half 100, half 144: each day is 2.0 from its weekday's median in t, so the
    // scale is 1.4826 × 1.15 × 2.0 = 3.41 and the usual value (100 + 144) / 2 = 122.
    let wide = history(tuesday(), |k, _| if (k / 7) % 2 == 0 { 100 } else { 144 });
    assert_eq!(flag(287, &wide), None);
    assert_eq!(flag(288, &wide), Some((Direction::High, 122, 3.5)));
    assert_eq!(flag(40, &wide), None);
}

#[test]
fn a_high_score_below_the_usual_value_plus_three_is_not_unusual() {
    // Tuesdays are half 0, half 1,000: the median in t sits far below the median of the values
    // (500), so 400 scores high while being below what is usual.
    let split = history(tuesday(), |k, same| match (same, k / 7) {
        (false, _) => 50,
        (true, w) if w <= 4 => 0,
        (true, _) => 1000,
    });
    let z = unusual_day(Metric::Visitors, tuesday(), 400, &split);
    assert_eq!(z, None);
    assert!(flag(504, &split).is_some_and(|(d, usual, _)| d == Direction::High && usual == 500));
}

#[test]
fn fewer_than_six_of_the_eight_same_weekdays_say_nothing() {
    let flat = history(tuesday(), |_, _| 100);
    let without = |n: usize| -> Vec<(NaiveDate, u64)> {
        let mut dropped = 0;
        flat.iter()
            .copied()
            .filter(|(d, _)| {
                let drop = d.weekday() == tuesday().weekday() && dropped < n;
                dropped += usize::from(drop);
                !drop
            })
            .collect()
    };
    assert!(flag(1000, &without(2)).is_some());
    assert_eq!(flag(1000, &without(3)), None);
    // Days outside the 56 before don't count towards the six.
    let old: Vec<_> = (57..=120)
        .map(|k| (tuesday() - chrono::Days::new(k), 100))
        .collect();
    assert_eq!(flag(1000, &old), None);
}

#[test]
fn a_zero_day_is_none_recorded_only_where_ten_or_more_are_usual() {
    let ten = history(tuesday(), |_, _| 10);
    assert_eq!(flag(0, &ten).map(|f| f.0), Some(Direction::NoneRecorded));
    // Usually 9: a zero is a very low day, not a broken snippet.
    let nine = history(tuesday(), |_, _| 9);
    assert_eq!(flag(0, &nine).map(|f| f.0), Some(Direction::Low));
    // Usually 2: a zero is ordinary.
    let two = history(tuesday(), |_, _| 2);
    assert_eq!(flag(0, &two), None);
}

#[test]
fn a_week_is_judged_against_the_eight_before_with_a_difference_of_five() {
    let weeks = [700, 700, 700, 700, 700, 700, 700, 700];
    // Eight equal weeks: the floor of 1.0; t(795) − t(700) = 3.48, t(796) − t(700) = 3.51.
    let week =
        |v| unusual_week(Metric::Visitors, v, &weeks).map(|u| (u.direction, u.usual, u.weekday));
    assert_eq!(week(795), None);
    assert_eq!(week(796), Some((Direction::High, 700, None)));
    assert_eq!(week(0).map(|w| w.0), Some(Direction::NoneRecorded));
    assert_eq!(unusual_week(Metric::Visitors, 10_000, &weeks[..5]), None);
    // The difference a week needs is 5 (a day's 3): with the spread of eight equal weeks,
    // only a bimodal history, given a narrow spread, scores high this close to its median.
    let split = [0, 0, 0, 0, 1000, 1000, 1000, 1000];
    let close = |value, at_least| judge(Metric::Visitors, value, &split, 0.0, at_least, None);
    assert!(close(504, 5).is_none() && close(504, 3).is_some());
    assert!(close(505, 5).is_some());
}

#[test]
fn weekdays_known_once_do_not_narrow_the_spread() {
    // A new team's first baseline: six Tuesdays, spread ±2 in t, and six other days known
    // once each. Counted, those six zero distances would halve the spread.
    let day = tuesday();
    let mut history: Vec<(NaiveDate, u64)> = (1..=6)
        .map(|w| {
            (
                day - chrono::Days::new(7 * w),
                if w % 2 == 0 { 100 } else { 144 },
            )
        })
        .collect();
    history.extend((1..=6).map(|k| (day - chrono::Days::new(k), 40)));
    // The Tuesdays alone: scale 3.41, so 287 is ordinary, as in the wide history.
    assert_eq!(flag(287, &history), None);
    assert!(flag(288, &history).is_some());
}
