//! rank + render per digest, for every kind: the reference day, and a large day (250
//! countries, 2,000 pages, 800 referrers). Targets: under 50 µs and under 2 ms. `cargo bench --bench digest`.
//! Under `cargo test --all-targets` each benchmark runs once, so CI keeps them compiling.

use std::hint::black_box;

use acquire_digest::config::{Webhook, WebhookKind, WebhookUrl};
use acquire_digest::fetch::{ChatSource, CountryRow, DayReport, HourRow};
use acquire_digest::rank::{Audience, rank};
use acquire_digest::render::Renderer;
use acquire_digest::schedule::{Window, Zone};
use criterion::{Criterion, criterion_group};

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
        // The target: what one digest costs for each kind, ranked and rendered.
        for kind in WebhookKind::ALL {
            let hook = hook(kind);
            let id = format!("rank + render {}, {name}", kind.as_str());
            c.bench_function(&id, |b| {
                MEASURED.lock().unwrap().push(id.clone());
                b.iter(|| {
                    let digest = rank(&audience, &window, black_box(&day));
                    black_box(renderer.body(&hook, &digest).unwrap())
                })
            });
        }
        // Ranking alone, to see where the time goes.
        c.bench_function(&format!("rank, {name}"), |b| {
            b.iter(|| rank(&audience, &window, black_box(&day)))
        });
    }
}

/// rank + render per kind on main at d825613, before issue 22: this bench run there on the same
/// VM, 2026-12-06. The reference day's target is 50 µs, the large day's 2 ms.
const BEFORE: [(&str, f64, f64); 6] = [
    ("slack", 61.7, 151.4),
    ("generic", 53.5, 133.1),
    ("discord", 61.1, 154.1),
    ("teams", 69.0, 166.1),
    ("google_chat", 63.9, 148.4),
    ("mattermost", 54.2, 152.8),
];

/// The benchmarks this run measured (a filter picks some), so none is reported from an
/// earlier run's estimates.
static MEASURED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Each kind's median beside its figure before, read back from criterion's estimates.
fn summary() {
    let home = std::env::var("CRITERION_HOME").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/criterion")
    });
    let measured = MEASURED.lock().unwrap();
    let median_us = |id: &str| -> Option<f64> {
        measured.iter().find(|m| *m == id)?;
        let path = format!("{home}/{id}/new/estimates.json");
        let estimates: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        Some(estimates["median"]["point_estimate"].as_f64()? / 1000.0)
    };
    println!("\nrank + render, median µs (before: d825613)");
    println!("{:<12} {:>22} {:>22}", "kind", "reference day", "large day");
    for (kind, reference, large) in BEFORE {
        let now = |day: &str| {
            median_us(&format!("rank + render {kind}, {day}"))
                .map_or("-".to_owned(), |us| format!("{us:.1}"))
        };
        println!(
            "{kind:<12} {:>22} {:>22}",
            format!("{} ({reference:.1})", now("reference day")),
            format!("{} ({large:.1})", now("large day")),
        );
    }
    println!("targets: 50 µs on the reference day, 2,000 µs on the large day");
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test` runs each benchmark once and keeps no estimates to report.
    if std::env::args().any(|arg| arg == "--bench") {
        summary();
    }
}
