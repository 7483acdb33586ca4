//! rank + render per digest: the reference day, and a large day (250 countries, 2,000 pages,
//! 800 referrers). Targets: under 50 µs and under 2 ms. `cargo bench --bench digest`.
//! Under `cargo test --all-targets` each benchmark runs once, so CI keeps them compiling.

use std::hint::black_box;

use acquire_digest::config::{Webhook, WebhookKind, WebhookUrl};
use acquire_digest::fetch::{ChatSource, CountryRow, DayReport, HourRow};
use acquire_digest::rank::{Audience, rank};
use acquire_digest::render::Renderer;
use acquire_digest::schedule::{Window, Zone};
use criterion::{Criterion, criterion_group, criterion_main};

fn reference_day() -> DayReport {
    DayReport::parse([
        include_bytes!("../src/simulator/reference/visitors-by-location.json"),
        include_bytes!("../src/simulator/reference/most-active-visit-times.json"),
        include_bytes!("../src/simulator/reference/pages-with-most-chats.json"),
        include_bytes!("../src/simulator/reference/visitor-reference.json"),
    ])
    .expect("the reference day parses")
}

fn large_day() -> DayReport {
    let source = |kind: &str, i: u64| ChatSource {
        text: format!("https://www.example.com/{kind}/{i}?utm_source=newsletter&ref=<{i}>"),
        chats: (i * 7919) % 1000,
        percentage: ((i * 31) % 10_000) as f64 / 100.0,
    };
    DayReport {
        countries: (0..250)
            .map(|i| CountryRow {
                name: format!("Country number {i}"),
                cca3: format!("C{i:02}"),
                visitors: (i * 104_729) % 50_000,
                chats: (i * 7919) % 5_000,
                cases: i,
                emails: i % 7,
                cobrowse: i % 3,
                calls: i % 5,
            })
            .collect(),
        hours: (0..24)
            .map(|h| HourRow {
                hour: h,
                label: format!("{:02} AM", h % 12),
                activity: (h as u64 * 37) % 100,
            })
            .collect(),
        pages: (0..2000).map(|i| source("page", i)).collect(),
        referrers: (0..800).map(|i| source("referrer", i)).collect(),
    }
}

fn hook(kind: WebhookKind) -> Webhook {
    Webhook {
        name: kind.as_str().into(),
        kind,
        url: WebhookUrl::parse("https://hooks.example.com/x").unwrap(),
        template: None,
        secret: None,
    }
}

fn bench(c: &mut Criterion) {
    let renderer = Renderer::builtin();
    let (slack, generic) = (hook(WebhookKind::Slack), hook(WebhookKind::Generic));
    let zone = Zone::parse("Asia/Kolkata").unwrap();
    let window = Window::for_date(zone, "2021-03-18".parse().unwrap());
    let audience = Audience {
        team: "support-apac",
        account_id: "acme",
        zone,
        top: 5,
    };
    for (name, day) in [
        ("reference day", reference_day()),
        ("large day", large_day()),
    ] {
        // The target: what one digest costs, ranked once and rendered for Slack and for the
        // generic webhook's text.
        c.bench_function(&format!("rank + render slack + text, {name}"), |b| {
            b.iter(|| {
                let digest = rank(&audience, &window, black_box(&day));
                let slack = renderer.body(&slack, &digest).unwrap();
                let text = renderer.body(&generic, &digest).unwrap();
                black_box((slack, text))
            })
        });
        // Its parts, to see where the time goes.
        let digest = rank(&audience, &window, &day);
        c.bench_function(&format!("rank, {name}"), |b| {
            b.iter(|| rank(&audience, &window, black_box(&day)))
        });
        c.bench_function(&format!("render slack, {name}"), |b| {
            b.iter(|| renderer.body(&slack, black_box(&digest)).unwrap())
        });
        c.bench_function(&format!("render text, {name}"), |b| {
            b.iter(|| renderer.body(&generic, black_box(&digest)).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
