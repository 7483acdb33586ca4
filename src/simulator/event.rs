//! Days that go wrong on purpose (`simulate --event ACCOUNT:DATE:KIND`), so an outage, a spike
//! or data that arrives late can be shown and tested on demand.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use super::REFERENCE_DATE;
use super::model::Scale;

/// What happens to an account's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A day of zeros: no countries, pages or referrers, every hour 0.
    Outage,
    /// Three times the day's usual counts, in every row and hour.
    Spike,
    /// Not in yet: the first read of each endpoint is an empty day, the second has half of
    /// each count (rounded down), later reads the whole day.
    Late,
}

impl EventKind {
    const ALL: [EventKind; 3] = [EventKind::Outage, EventKind::Spike, EventKind::Late];

    fn name(self) -> &'static str {
        match self {
            EventKind::Outage => "outage",
            EventKind::Spike => "spike",
            EventKind::Late => "late",
        }
    }

    /// How the day is served on an endpoint's `read`th read of it (from 1).
    pub(super) fn scale(self, read: u32) -> Scale {
        match (self, read) {
            (EventKind::Outage, _) | (EventKind::Late, 0..=1) => Scale::NOTHING,
            (EventKind::Spike, _) => Scale { times: 3, per: 1 },
            (EventKind::Late, 2) => Scale { times: 1, per: 2 },
            (EventKind::Late, _) => Scale::AS_IS,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An account's date made an outage, a spike or late: `ACCOUNT:DATE:KIND`, such as
/// `acme:2026-07-15:outage`. Several events on one day combine (a late spike is empty, then
/// 1.5×, then 3×).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedEvent {
    /// Lower case, as the simulator reads account ids from paths and hosts.
    pub account: String,
    pub date: NaiveDate,
    pub kind: EventKind,
}

const FORM: &str = "write ACCOUNT:DATE:KIND, such as acme:2026-07-15:outage";

impl FromStr for SimulatedEvent {
    type Err = String;

    fn from_str(text: &str) -> Result<SimulatedEvent, String> {
        let parts: Vec<&str> = text.split(':').map(str::trim).collect();
        let [account, date, kind] = parts[..] else {
            return Err(format!(
                "{} parts separated by ':' where 3 belong; {FORM}",
                parts.len()
            ));
        };
        if account.is_empty() {
            return Err(format!("the account is missing; {FORM}"));
        }
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| format!("{date} is not a date (YYYY-MM-DD)"))?;
        if date == REFERENCE_DATE {
            return Err(format!(
                "{date} is the API reference's example day, always served as published; pick another date"
            ));
        }
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.name() == kind.to_ascii_lowercase())
            .ok_or_else(|| format!("{kind:?} is not an event; use outage, spike or late"))?;
        Ok(SimulatedEvent {
            account: account.to_ascii_lowercase(),
            date,
            kind,
        })
    }
}

impl fmt::Display for SimulatedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.account, self.date, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_print_back() {
        let event: SimulatedEvent = "Acme:2026-07-15:LATE".parse().unwrap();
        assert_eq!(
            event,
            SimulatedEvent {
                account: "acme".into(),
                date: NaiveDate::from_ymd_opt(2026, 7, 15).unwrap(),
                kind: EventKind::Late,
            }
        );
        assert_eq!(event.to_string(), "acme:2026-07-15:late");
        for kind in EventKind::ALL {
            let text = format!("globex:2026-01-02:{kind}");
            assert_eq!(text.parse::<SimulatedEvent>().unwrap().kind, kind);
        }
    }

    #[test]
    fn a_bad_event_names_its_bad_part_and_the_fix() {
        let error = |text: &str| text.parse::<SimulatedEvent>().unwrap_err();
        assert_eq!(
            error("acme:2026-13-01:outage"),
            "2026-13-01 is not a date (YYYY-MM-DD)"
        );
        assert_eq!(
            error("acme:2026-07-15:boom"),
            "\"boom\" is not an event; use outage, spike or late"
        );
        assert!(error("acme:2026-07-15").contains("2 parts"));
        assert!(error("acme:2026-07-15").contains("ACCOUNT:DATE:KIND"));
        assert!(error(":2026-07-15:spike").contains("account is missing"));
        assert!(error("acme:2021-03-18:spike").contains("reference"));
    }

    #[test]
    fn a_late_day_fills_in_over_three_reads() {
        let scales: Vec<Scale> = (1..=4).map(|read| EventKind::Late.scale(read)).collect();
        assert_eq!(
            scales,
            [
                Scale::NOTHING,
                Scale { times: 1, per: 2 },
                Scale::AS_IS,
                Scale::AS_IS
            ]
        );
        assert_eq!(EventKind::Outage.scale(5), Scale::NOTHING);
        assert_eq!(EventKind::Spike.scale(1), Scale { times: 3, per: 1 });
    }
}
