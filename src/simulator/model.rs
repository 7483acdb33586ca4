//! The numbers behind the simulator's answers: an account that stays recognisably itself from
//! day to day, and the counts of one of its days. Everything is drawn from generators seeded by
//! the account id and the date, so nothing is stored and any day can be had in any order.
//!
//! An account is, once and for all: its size (a weekday's expected visitors), how much quieter
//! its weekends are, its chat rate, its hour profile, and which countries, pages and referrers
//! it draws from with what weights. The weights drift over weeks and months (each on its own
//! slow sinusoid), and the volume with the season, so last month looks like this month but not
//! like last year. A day then draws its visitors from a negative binomial around that day's
//! expectation and splits them (and their chats) by the account's mix.

use std::f64::consts::TAU;
use std::ops::{Range, RangeInclusive};

use chrono::{Datelike, NaiveDate, Weekday};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_distr::{Binomial, Distribution, Gamma, Poisson};
use rand_pcg::Pcg64;

/// The quietest and busiest accounts' weekday visitors, drawn log-uniformly between them so
/// small accounts are as common as large ones, as among real customers.
const FEWEST_VISITORS: f64 = 3.0;
const MOST_VISITORS: f64 = 5_000.0;

/// The negative binomial's size: a day's coefficient of variation is √(1/mean + 1/size), so
/// about 0.15 at 1,000 visitors a day (a busy, steady site's swing between like weekdays)
/// while a 3-a-day account stays close to Poisson, where chance, not the weather, decides its
/// days. At size 20 (0.23) the unusual rule caught 13 of 16 tripled days at 60 a day, not the
/// nine in ten it catches here: a swingier site needs a bigger spike to be told apart.
const DISPERSION: f64 = 50.0;

/// A weekend day's share of a weekday's visitors; each account has its own.
const WEEKEND_SHARE: Range<f64> = 0.55..0.70;

/// How far the season moves a day's expected visitors from the account's usual, over a year.
const SEASON_SWING: f64 = 0.10;
const DAYS_A_YEAR: f64 = 365.25;

/// Each weight of a mix is scaled by e^(±this) over its own period: enough for the second and
/// third rows to trade places over a few weeks, and for the top row to be overtaken only when
/// an account's mix is flat enough.
const DRIFT: f64 = 0.3;
const DRIFT_PERIOD_DAYS: Range<f64> = 56.0..364.0;

/// How steeply a mix's weights fall by rank (Zipf's exponent): the second row gets 1/2^skew of
/// the first's.
const SKEW: Range<f64> = 0.7..1.3;

/// The share of visitors who chat.
const CHAT_RATE: Range<f64> = 0.08..0.35;

/// Per country: cases beyond its chats per chat, and emails, co-browsing sessions, video and
/// audio calls per visitor. About what the simulator drew before it had a model.
const EXTRA_CASES: f64 = 0.12;
const EMAILS: f64 = 0.08;
const COBROWSES: f64 = 0.05;
const VIDEO_CALLS: f64 = 0.015;
const AUDIO_CALLS: f64 = 0.012;

/// How busy each local hour is, relative to the busiest.
const DAYLIGHT: [f64; 24] = [
    0., 0., 0., 0., 0., 1., 2., 4., 6., 8., 9., 10., 9., 10., 10., 9., 8., 6., 5., 4., 3., 2., 1.,
    0.,
];

/// The count columns of a most-active-visit-times row; an hour's visits are spread over them.
pub(super) const HOUR_COLUMNS: usize = 12;

/// One date's hour cells by hour of the day.
pub(super) type DayHours = [[u64; HOUR_COLUMNS]; 24];

pub(super) const COUNTRIES: [(&str, &str, &str, &str); 24] = [
    ("United States", "USA", "38", "-97"),
    ("India", "IND", "20", "77"),
    ("United Kingdom", "GBR", "54", "-2"),
    ("Germany", "DEU", "51", "9"),
    ("Brazil", "BRA", "-10", "-55"),
    ("Canada", "CAN", "60", "-95"),
    ("Australia", "AUS", "-27", "133"),
    ("France", "FRA", "46", "2"),
    ("Japan", "JPN", "36", "138"),
    ("Mexico", "MEX", "23", "-102"),
    ("Netherlands", "NLD", "52.5", "5.75"),
    ("Spain", "ESP", "40", "-4"),
    ("Singapore", "SGP", "1.36666666", "103.8"),
    ("Nigeria", "NGA", "10", "8"),
    ("South Africa", "ZAF", "-29", "24"),
    ("Philippines", "PHL", "13", "122"),
    ("Indonesia", "IDN", "-5", "120"),
    ("Poland", "POL", "52", "20"),
    ("Sweden", "SWE", "62", "15"),
    ("United Arab Emirates", "ARE", "24", "54"),
    ("Pakistan", "PAK", "30", "70"),
    ("Côte d'Ivoire", "CIV", "8", "-5"),
    ("Türkiye", "TUR", "39", "35"),
    ("New Zealand", "NZL", "-41", "174"),
];

pub(super) const PAGES: [&str; 12] = [
    "/",
    "/pricing",
    "/features",
    "/contact",
    "/blog/choosing-a-live-chat-tool",
    "/docs/getting-started",
    "/signup",
    "/checkout?step=payment",
    "/integrations/slack",
    "/support/faq",
    "/about",
    "/careers",
];

pub(super) const REFERRERS: [&str; 9] = [
    "https://www.google.com/",
    "direct",
    "https://www.bing.com/",
    "https://www.linkedin.com/",
    "https://t.co/",
    "https://news.ycombinator.com/",
    "https://duckduckgo.com/",
    "https://www.facebook.com/",
    "android-app://com.slack",
];

/// Independent generators for the parts of one day, so a country list doesn't change when the
/// hours are drawn differently, and each endpoint draws only what it serves.
#[derive(Clone, Copy)]
enum Stream {
    Totals = 1,
    Countries,
    Hours,
    Pages,
    Referrers,
    Looseness,
}

/// An account's lasting character, derived from its id alone.
pub(super) struct Account {
    seed: u64,
    /// A weekday's expected visitors, before the season and the noise.
    usual: f64,
    weekend_share: f64,
    season_phase: f64,
    chat_rate: f64,
    /// Hours its visitors come later (or, negative, earlier) than [`DAYLIGHT`]'s.
    hour_shift: i64,
    countries: Mix<{ COUNTRIES.len() }>,
    pages: Mix<{ PAGES.len() }>,
    referrers: Mix<{ REFERRERS.len() }>,
}

impl Account {
    pub(super) fn new(id: &str) -> Account {
        let seed = super::fnv1a(id.as_bytes());
        let mut rng = Pcg64::seed_from_u64(seed);
        // Drawn first, so an account's size never depends on how the rest is drawn.
        let usual = FEWEST_VISITORS * (MOST_VISITORS / FEWEST_VISITORS).powf(rng.random::<f64>());
        Account {
            seed,
            usual,
            weekend_share: rng.random_range(WEEKEND_SHARE),
            season_phase: rng.random_range(0.0..TAU),
            chat_rate: rng.random_range(CHAT_RATE),
            hour_shift: rng.random_range(-1..=1),
            countries: Mix::new(&mut rng, 4..=20),
            pages: Mix::new(&mut rng, 4..=12),
            referrers: Mix::new(&mut rng, 3..=9),
        }
    }

    pub(super) fn usual(&self) -> f64 {
        self.usual
    }

    /// The visitors `date` is expected to bring, before the day's noise.
    fn expected_on(&self, date: NaiveDate) -> f64 {
        let season =
            1.0 + SEASON_SWING * (TAU * day_number(date) / DAYS_A_YEAR + self.season_phase).sin();
        let week = match date.weekday() {
            Weekday::Sat | Weekday::Sun => self.weekend_share,
            _ => 1.0,
        };
        self.usual * season * week
    }
}

/// An account's rows of one kind (countries, pages or referrers) by rank, each with a weight
/// that drifts on its own slow sinusoid.
struct Mix<const N: usize> {
    /// The first `len` are the account's; their order is its ranking by base weight.
    shares: [Share; N],
    len: usize,
}

#[derive(Clone, Copy, Default)]
struct Share {
    /// Its index in the table the mix draws from.
    item: usize,
    weight: f64,
    period_days: f64,
    phase: f64,
}

impl<const N: usize> Mix<N> {
    fn new(rng: &mut Pcg64, len: RangeInclusive<usize>) -> Mix<N> {
        let mut items: [usize; N] = std::array::from_fn(|i| i);
        items.shuffle(rng);
        let len = rng.random_range(len).min(N);
        let skew = rng.random_range(SKEW);
        let shares = std::array::from_fn(|rank| Share {
            item: items[rank],
            weight: (rank as f64 + 1.0).powf(-skew),
            period_days: rng.random_range(DRIFT_PERIOD_DAYS),
            phase: rng.random_range(0.0..TAU),
        });
        Mix { shares, len }
    }

    /// The weights on the day numbered `day`, by rank; zero past the account's rows.
    fn weights_on(&self, day: f64) -> [f64; N] {
        let mut weights = [0.0; N];
        for (weight, share) in weights.iter_mut().zip(&self.shares[..self.len]) {
            let drift = (TAU * day / share.period_days + share.phase).sin();
            *weight = share.weight * (DRIFT * drift).exp();
        }
        weights
    }

    /// The table index of the row at each rank.
    fn item(&self, rank: usize) -> usize {
        self.shares[rank].item
    }
}

/// A day's counts multiplied by `times / per` (rounded down): 3/1 for a spike, 1/2 for a late
/// day's second read, 0/1 for nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scale {
    pub times: u64,
    pub per: u64,
}

impl Scale {
    pub(super) const AS_IS: Scale = Scale { times: 1, per: 1 };
    pub(super) const NOTHING: Scale = Scale { times: 0, per: 1 };

    pub(super) fn then(self, other: Scale) -> Scale {
        Scale {
            times: self.times * other.times,
            per: self.per * other.per,
        }
    }

    fn of(self, count: u64) -> u64 {
        count * self.times / self.per
    }

    fn is_nothing(self) -> bool {
        self.times == 0
    }
}

/// One country row's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CountryCounts {
    /// Its index in [`COUNTRIES`].
    pub country: usize,
    pub visitors: u64,
    pub chats: u64,
    pub cases: u64,
    pub emails: u64,
    pub cobrowses: u64,
    pub video_calls: u64,
    pub audio_calls: u64,
}

/// A page's or a referrer's chats: its index in [`PAGES`] or [`REFERRERS`], and the count.
pub(super) type SourceChats = (usize, u64);

/// One account's date: its totals, and the rows each endpoint splits them into.
pub(super) struct Day<'a> {
    account: &'a Account,
    day: f64,
    seed: u64,
    scale: Scale,
    visitors: u64,
    chats: u64,
}

impl<'a> Day<'a> {
    /// The day as it happened, its counts scaled by `scale`.
    pub(super) fn new(account: &'a Account, date: NaiveDate, scale: Scale) -> Day<'a> {
        let day_number = i64::from(date.num_days_from_ce());
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&account.seed.to_le_bytes());
        bytes[8..].copy_from_slice(&day_number.to_le_bytes());
        let mut day = Day {
            account,
            day: day_number as f64,
            seed: super::fnv1a(&bytes),
            scale,
            visitors: 0,
            chats: 0,
        };
        let mut rng = day.rng(Stream::Totals);
        let expected = account.expected_on(date);
        // Gamma–Poisson: the day's own rate first (how good a day it is), then who came.
        let rate = Gamma::new(DISPERSION, expected / DISPERSION)
            .expect("a positive expectation")
            .sample(&mut rng);
        day.visitors = if rate > 0.0 {
            Poisson::new(rate)
                .expect("a finite positive rate")
                .sample(&mut rng) as u64
        } else {
            0
        };
        day.chats = binomial(&mut rng, day.visitors, account.chat_rate);
        day
    }

    fn rng(&self, stream: Stream) -> Pcg64 {
        Pcg64::seed_from_u64(self.seed ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A generator for presentation choices (numbers sent as strings), apart from the counts.
    pub(super) fn looseness(&self) -> Pcg64 {
        self.rng(Stream::Looseness)
    }

    /// The countries that had visitors, in the account's order, each with its share of the
    /// day's visitors and chats.
    pub(super) fn countries(&self) -> Vec<CountryCounts> {
        if self.scale.is_nothing() {
            return Vec::new();
        }
        let mut rng = self.rng(Stream::Countries);
        let mix = &self.account.countries;
        let visitors = split(&mut rng, self.visitors, &mix.weights_on(self.day));
        let chats = split(&mut rng, self.chats, &visitors.map(|v| v as f64));
        let mut rows = Vec::with_capacity(mix.len);
        for (rank, (&visitors, &chats)) in visitors.iter().zip(&chats).enumerate() {
            if visitors == 0 {
                continue;
            }
            let row = CountryCounts {
                country: mix.item(rank),
                visitors,
                chats,
                cases: chats + binomial(&mut rng, chats, EXTRA_CASES),
                emails: binomial(&mut rng, visitors, EMAILS),
                cobrowses: binomial(&mut rng, visitors, COBROWSES),
                video_calls: binomial(&mut rng, visitors, VIDEO_CALLS),
                audio_calls: binomial(&mut rng, visitors, AUDIO_CALLS),
            };
            let scaled = CountryCounts {
                visitors: self.scale.of(row.visitors),
                chats: self.scale.of(row.chats),
                cases: self.scale.of(row.cases),
                emails: self.scale.of(row.emails),
                cobrowses: self.scale.of(row.cobrowses),
                video_calls: self.scale.of(row.video_calls),
                audio_calls: self.scale.of(row.audio_calls),
                ..row
            };
            if scaled.visitors > 0 {
                rows.push(scaled);
            }
        }
        rows
    }

    /// The day's visitors by local hour, from midnight whatever the window, so an hour of a
    /// date has the same counts in every window that covers it.
    pub(super) fn hours(&self) -> DayHours {
        let mut cells = [[0; HOUR_COLUMNS]; 24];
        if self.scale.is_nothing() {
            return cells;
        }
        let mut rng = self.rng(Stream::Hours);
        let profile: [f64; 24] = std::array::from_fn(|hour| {
            DAYLIGHT[(hour as i64 - self.account.hour_shift).rem_euclid(24) as usize]
        });
        let by_hour = split(&mut rng, self.visitors, &profile);
        // The client reads only a row's sum and the API doesn't say what its columns are, so
        // an hour's visits are laid out evenly over them rather than drawn a second time.
        for (row, visits) in cells.iter_mut().zip(by_hour) {
            let (each, rest) = (visits / HOUR_COLUMNS as u64, visits % HOUR_COLUMNS as u64);
            for (column, cell) in (0..).zip(row.iter_mut()) {
                *cell = self.scale.of(each + u64::from(column < rest));
            }
        }
        cells
    }

    /// The pages the day's chats started on, in the account's order.
    pub(super) fn pages(&self) -> Vec<SourceChats> {
        self.chat_sources(Stream::Pages, &self.account.pages)
    }

    /// Where the day's chatting visitors came from, in the account's order.
    pub(super) fn referrers(&self) -> Vec<SourceChats> {
        self.chat_sources(Stream::Referrers, &self.account.referrers)
    }

    fn chat_sources<const N: usize>(&self, stream: Stream, mix: &Mix<N>) -> Vec<SourceChats> {
        if self.scale.is_nothing() {
            return Vec::new();
        }
        let mut rng = self.rng(stream);
        split(&mut rng, self.chats, &mix.weights_on(self.day))
            .into_iter()
            .enumerate()
            .map(|(rank, chats)| (mix.item(rank), self.scale.of(chats)))
            .filter(|&(_, chats)| chats > 0)
            .collect()
    }
}

/// The days since 1 January of year 1, as the drift's and the season's clock.
fn day_number(date: NaiveDate) -> f64 {
    f64::from(date.num_days_from_ce())
}

fn binomial(rng: &mut Pcg64, trials: u64, p: f64) -> u64 {
    Binomial::new(trials, p.clamp(0.0, 1.0))
        .expect("a probability within 0-1")
        .sample(rng)
}

/// `total` shared out in proportion to `weights` (a multinomial draw, one binomial per
/// share of what is left), so the parts always add up to the total.
fn split<const N: usize>(rng: &mut Pcg64, total: u64, weights: &[f64; N]) -> [u64; N] {
    let mut parts = [0; N];
    // The last weighted share takes what is left, whatever rounding did to the weights' sum.
    let Some(last) = weights.iter().rposition(|&weight| weight > 0.0) else {
        return parts;
    };
    let mut left = total;
    let mut weight_left: f64 = weights.iter().sum();
    for (i, (part, &weight)) in parts.iter_mut().zip(weights).enumerate() {
        if left == 0 {
            break;
        }
        *part = if i == last {
            left
        } else {
            binomial(rng, left, weight / weight_left)
        };
        left -= *part;
        weight_left -= weight;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first of `acct-0`..`acct-9999` whose usual weekday is within 10% of `visitors`.
    fn account_near(visitors: f64) -> Account {
        (0..10_000)
            .map(|i| Account::new(&format!("acct-{i}")))
            .find(|account| (account.usual / visitors - 1.0).abs() < 0.1)
            .unwrap_or_else(|| panic!("no account near {visitors} visitors a day"))
    }

    fn dates(first: &str, count: u64) -> impl Iterator<Item = NaiveDate> {
        let first: NaiveDate = first.parse().unwrap();
        first.iter_days().take(count as usize)
    }

    fn is_weekend(date: NaiveDate) -> bool {
        matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
    }

    fn visitors(account: &Account, date: NaiveDate) -> u64 {
        Day::new(account, date, Scale::AS_IS).visitors
    }

    fn mean_and_variance(values: &[u64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<u64>() as f64 / n;
        let variance = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (mean, variance)
    }

    fn weekdays_of_a_year(account: &Account) -> Vec<u64> {
        dates("2026-01-05", 364)
            .filter(|&date| !is_weekend(date))
            .map(|date| visitors(account, date))
            .collect()
    }

    #[test]
    fn accounts_range_from_a_few_to_thousands_of_visitors_a_day() {
        let usual: Vec<f64> = (0..10_000)
            .map(|i| Account::new(&format!("acct-{i}")).usual)
            .collect();
        let (fewest, most) = usual
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &u| (lo.min(u), hi.max(u)));
        assert!((3.0..3.5).contains(&fewest), "{fewest}");
        assert!((4_500.0..=5_000.0).contains(&most), "{most}");
        // Log-uniform: as many accounts under the range's geometric middle (~122) as over it,
        // and a tenth within each tenth of the log range.
        let small = usual
            .iter()
            .filter(|&&u| u < (3.0f64 * 5_000.0).sqrt())
            .count();
        assert!(
            (4_500..5_500).contains(&small),
            "{small} of 10,000 under 122"
        );
        let under_ten = usual
            .iter()
            .filter(|&&u| u < 3.0 * 1.5_f64.powf(3.0))
            .count();
        assert!(under_ten > 1_000, "{under_ten} of 10,000 under ten a day");
    }

    #[test]
    fn a_year_of_weekdays_averages_the_usual_visitors() {
        for size in [1_000.0, 4_000.0] {
            let account = account_near(size);
            let (mean, _) = mean_and_variance(&weekdays_of_a_year(&account));
            let off = mean / account.usual - 1.0;
            assert!(
                off.abs() < 0.15,
                "{mean} a weekday against {}",
                account.usual
            );
        }
    }

    #[test]
    fn weekends_are_quieter_than_weekdays() {
        for size in [50.0, 1_000.0] {
            let account = account_near(size);
            let (weekend, weekdays): (Vec<NaiveDate>, Vec<NaiveDate>) =
                dates("2026-01-05", 52 * 7).partition(|&date| is_weekend(date));
            let mean = |days: &[NaiveDate]| {
                days.iter().map(|&d| visitors(&account, d)).sum::<u64>() as f64 / days.len() as f64
            };
            let share = mean(&weekend) / mean(&weekdays);
            assert!((0.45..0.8).contains(&share), "{size}: weekends at {share}");
        }
    }

    #[test]
    fn a_busy_account_varies_more_than_chance_and_a_quiet_one_by_chance() {
        let (mean, variance) = mean_and_variance(&weekdays_of_a_year(&account_near(1_000.0)));
        assert!(variance > 20.0 * mean, "variance {variance} at mean {mean}");
        let cv = variance.sqrt() / mean;
        assert!((0.15..0.35).contains(&cv), "coefficient of variation {cv}");

        let (mean, variance) = mean_and_variance(&weekdays_of_a_year(&account_near(3.3)));
        assert!(variance < 2.0 * mean, "variance {variance} at mean {mean}");
    }

    #[test]
    fn only_quiet_accounts_have_days_without_visitors() {
        let empty = |account: &Account| {
            dates("2026-01-01", 365)
                .filter(|&date| visitors(account, date) == 0)
                .count()
        };
        assert!(empty(&account_near(3.3)) >= 10);
        assert_eq!(empty(&account_near(300.0)), 0);
        assert_eq!(empty(&account_near(4_000.0)), 0);
    }

    #[test]
    fn a_mid_size_account_keeps_its_top_country_and_its_rows_from_day_to_day() {
        let account = account_near(300.0);
        let days: Vec<Day> = dates("2026-06-01", 31)
            .map(|date| Day::new(&account, date, Scale::AS_IS))
            .collect();
        let tops: Vec<usize> = days
            .iter()
            .map(|day| {
                let countries = day.countries();
                countries.iter().max_by_key(|c| c.visitors).unwrap().country
            })
            .collect();
        let most_common = tops
            .iter()
            .map(|top| tops.iter().filter(|t| *t == top).count())
            .max()
            .unwrap();
        assert!(most_common * 10 >= tops.len() * 7, "{tops:?}");

        let rows = |day: &Day| -> Vec<(u8, usize)> {
            let countries = day.countries().into_iter().map(|c| (0, c.country));
            let pages = day.pages().into_iter().map(|(page, _)| (1, page));
            let referrers = day.referrers().into_iter().map(|(r, _)| (2, r));
            countries.chain(pages).chain(referrers).collect()
        };
        let (mut seen, mut seen_before) = (0, 0);
        for pair in days.windows(2) {
            let before = rows(&pair[0]);
            let today = rows(&pair[1]);
            seen += today.len();
            seen_before += today.iter().filter(|row| before.contains(row)).count();
        }
        assert!(seen_before * 10 >= seen * 8, "{seen_before} of {seen} rows");
    }

    #[test]
    fn the_mix_drifts_over_months() {
        let account = account_near(2_000.0);
        let mut orders = Vec::new();
        for month in 0..24 {
            let mut by_country = [0u64; COUNTRIES.len()];
            let first = NaiveDate::from_ymd_opt(2026 + month / 12, month as u32 % 12 + 1, 1);
            for date in first.unwrap().iter_days().take(28) {
                for row in Day::new(&account, date, Scale::AS_IS).countries() {
                    by_country[row.country] += row.visitors;
                }
            }
            let mut order: Vec<usize> = (0..COUNTRIES.len()).collect();
            order.sort_by_key(|&c| std::cmp::Reverse(by_country[c]));
            order.truncate(3);
            orders.push(order);
        }
        orders.dedup();
        assert!(
            orders.len() > 1,
            "the same top three for two years: {orders:?}"
        );
    }

    #[test]
    fn every_list_adds_up_to_the_days_totals() {
        let account = account_near(800.0);
        for date in dates("2026-03-01", 30) {
            let day = Day::new(&account, date, Scale::AS_IS);
            let countries = day.countries();
            let sum = |f: fn(&CountryCounts) -> u64| countries.iter().map(f).sum::<u64>();
            assert_eq!(sum(|c| c.visitors), day.visitors);
            assert_eq!(sum(|c| c.chats), day.chats);
            let hours: u64 = day.hours().iter().flatten().sum();
            assert_eq!(hours, day.visitors);
            let chats = |list: Vec<SourceChats>| list.iter().map(|(_, c)| c).sum::<u64>();
            assert_eq!(chats(day.pages()), day.chats);
            assert_eq!(chats(day.referrers()), day.chats);
            let rate = day.chats as f64 / day.visitors as f64;
            assert!(
                CHAT_RATE.start / 2.0 < rate && rate < CHAT_RATE.end * 1.5,
                "{rate}"
            );
        }
    }

    #[test]
    fn a_scaled_day_is_the_same_day_scaled() {
        let account = account_near(500.0);
        let date = "2026-04-14".parse().unwrap();
        let day = Day::new(&account, date, Scale::AS_IS);
        let spike = Day::new(&account, date, Scale { times: 3, per: 1 });
        let half = Day::new(&account, date, Scale { times: 1, per: 2 });
        let nothing = Day::new(&account, date, Scale::NOTHING);
        let visitors = |day: &Day| {
            day.countries()
                .iter()
                .map(|c| c.visitors)
                .collect::<Vec<_>>()
        };
        let expected: Vec<u64> = visitors(&day).iter().map(|v| v * 3).collect();
        assert_eq!(visitors(&spike), expected);
        let expected: Vec<u64> = visitors(&day)
            .iter()
            .map(|v| v / 2)
            .filter(|&v| v > 0)
            .collect();
        assert_eq!(visitors(&half), expected);
        assert!(nothing.countries().is_empty() && nothing.pages().is_empty());
        assert!(nothing.hours().iter().flatten().all(|&cell| cell == 0));
        let spiked_hours: Vec<u64> = day.hours().iter().flatten().map(|c| c * 3).collect();
        assert_eq!(
            spike.hours().iter().flatten().copied().collect::<Vec<_>>(),
            spiked_hours
        );
    }
}
