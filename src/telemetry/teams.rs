//! Every series with a team label (`acquire_digest_deliveries_total`,
//! `acquire_digest_last_delivery_timestamp_seconds`,
//! `acquire_digest_next_digest_timestamp_seconds`, `acquire_digest_data_rechecks_total`), kept
//! as plain numbers under the team's and its webhooks' names, and made into label sets only
//! while a scrape is encoded. As families of label sets they took about 160 bytes a team and series, and 2 KiB a
//! webhook for the deliveries' eight outcomes: at 100,000 teams, most of the daemon's memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::DELIVERY_OUTCOMES;

#[derive(Debug, Default, Clone)]
pub(super) struct Teams(Arc<RwLock<HashMap<Box<str>, Team>>>);

/// A team's series: each configured team has them from the first scrape, at zero.
#[derive(Debug, Default)]
struct Team {
    /// Unix time; None while its schedule has no next firing, or once it is unscheduled.
    next_digest: Option<f64>,
    data_rechecks: u64,
    /// A few a team: found by a walk, without a second copy of the team's name.
    webhooks: Vec<Webhook>,
}

#[derive(Debug)]
struct Webhook {
    name: Box<str>,
    /// By [`DELIVERY_OUTCOMES`].
    deliveries: [u64; DELIVERY_OUTCOMES.len()],
    /// Unix time; None until one is delivered.
    last_delivery: Option<f64>,
}

impl Team {
    fn webhook(&mut self, name: &str) -> &mut Webhook {
        let at = match self.webhooks.iter().position(|w| &*w.name == name) {
            Some(at) => at,
            None => {
                // A first push would make room for four.
                self.webhooks.reserve_exact(1);
                self.webhooks.push(Webhook {
                    name: name.into(),
                    deliveries: [0; DELIVERY_OUTCOMES.len()],
                    last_delivery: None,
                });
                self.webhooks.len() - 1
            }
        };
        &mut self.webhooks[at]
    }
}

impl Teams {
    /// Runs `change` on the team's series, making them first if it has none.
    fn change(&self, team: &str, change: impl FnOnce(&mut Team)) {
        let mut teams = self.0.write().expect("team series");
        match teams.get_mut(team) {
            Some(series) => change(series),
            None => change(teams.entry(team.into()).or_default()),
        }
    }

    /// A configured team and its webhooks: their series exist from now on.
    pub(super) fn configured<'a>(&self, team: &str, webhooks: impl IntoIterator<Item = &'a str>) {
        self.change(team, |series| {
            for webhook in webhooks {
                series.webhook(webhook);
            }
        });
    }

    /// A webhook's delivery round ended in `outcome` (one of [`DELIVERY_OUTCOMES`]) at `now`.
    pub(super) fn delivery(&self, team: &str, webhook: &str, outcome: &str, now: f64) {
        let Some(at) = DELIVERY_OUTCOMES.iter().position(|o| *o == outcome) else {
            debug_assert!(false, "an outcome outside DELIVERY_OUTCOMES: {outcome}");
            return;
        };
        self.change(team, |series| {
            let webhook = series.webhook(webhook);
            webhook.deliveries[at] += 1;
            if outcome == "delivered" {
                webhook.last_delivery = Some(now);
            }
        });
    }

    /// When a webhook last had a digest delivered, as the ledger remembers it.
    pub(super) fn delivered_before(&self, team: &str, webhook: &str, at: f64) {
        self.change(team, |series| {
            series.webhook(webhook).last_delivery = Some(at)
        });
    }

    pub(super) fn data_recheck(&self, team: &str) {
        self.change(team, |series| series.data_rechecks += 1);
    }

    pub(super) fn next_digest(&self, team: &str, at: Option<f64>) {
        self.change(team, |series| series.next_digest = at);
    }
}

impl Collector for Teams {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let teams = self.0.read().expect("team series");
        // Counters are named without `_total`: the encoder appends it.
        let mut family = encoder.encode_descriptor(
            "acquire_digest_deliveries",
            "Deliveries of a digest to a webhook by outcome (delivered, failed, refused, unknown, too_many_attempts, skipped, superseded, missed), one per delivery round or missed firing",
            None,
            MetricType::Counter,
        )?;
        for (team, series) in teams.iter() {
            for webhook in &series.webhooks {
                for (outcome, count) in DELIVERY_OUTCOMES.iter().zip(webhook.deliveries) {
                    let labels = [
                        ("team", &**team),
                        ("webhook", &*webhook.name),
                        ("outcome", outcome),
                    ];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "acquire_digest_last_delivery_timestamp_seconds",
            "When a team's digest last reached a webhook (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        for (team, series) in teams.iter() {
            for webhook in &series.webhooks {
                if let Some(at) = webhook.last_delivery {
                    let labels = [("team", &**team), ("webhook", &*webhook.name)];
                    ConstGauge::new(at).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "acquire_digest_next_digest_timestamp_seconds",
            "When a team's next new digest fires (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        for (team, series) in teams.iter() {
            if let Some(at) = series.next_digest {
                ConstGauge::new(at).encode(family.encode_family(&[("team", &**team)])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "acquire_digest_data_rechecks",
            "Reads of a team's data again after it looked incomplete (a zero or unusually low total)",
            None,
            MetricType::Counter,
        )?;
        for (team, series) in teams.iter() {
            let labels = [("team", &**team)];
            ConstCounter::new(series.data_rechecks).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(teams: &Teams) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(teams.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn a_teams_series_are_there_from_the_start_and_only_next_digest_goes() {
        let teams = Teams::default();
        teams.configured("apac", ["slack", "generic"]);
        teams.next_digest("apac", Some(1_800_000_000.0));
        let first = scrape(&teams);
        let zeros = "acquire_digest_deliveries_total{team=\"apac\",webhook=\"generic\",outcome=\"missed\"} 0";
        assert!(first.contains(zeros), "{first}");
        assert_eq!(
            first.matches("acquire_digest_deliveries_total{").count(),
            16
        );
        assert!(first.contains("acquire_digest_data_rechecks_total{team=\"apac\"} 0"));
        assert!(
            first
                .contains("acquire_digest_next_digest_timestamp_seconds{team=\"apac\"} 1800000000")
        );
        assert!(!first.contains("acquire_digest_last_delivery_timestamp_seconds{"));

        teams.delivery("apac", "slack", "delivered", 1_700_000_000.5);
        teams.delivery("apac", "slack", "failed", 1_700_000_100.0);
        teams.data_recheck("apac");
        teams.next_digest("apac", None);
        let after = scrape(&teams);
        for line in [
            "acquire_digest_deliveries_total{team=\"apac\",webhook=\"slack\",outcome=\"delivered\"} 1",
            "acquire_digest_deliveries_total{team=\"apac\",webhook=\"slack\",outcome=\"failed\"} 1",
            "acquire_digest_last_delivery_timestamp_seconds{team=\"apac\",webhook=\"slack\"} 1700000000.5",
            "acquire_digest_data_rechecks_total{team=\"apac\"} 1",
        ] {
            assert!(after.contains(line), "{line} in {after}");
        }
        assert!(
            !after.contains("acquire_digest_next_digest_timestamp_seconds{"),
            "{after}"
        );
        assert!(!after.contains("webhook=\"generic\"} "), "{after}");
    }
}
