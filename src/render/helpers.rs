//! The template helpers, the same for every kind. Each returns a value, so Handlebars writes it
//! through the kind's escape (a JSON string's inside) like any `{{variable}}`.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonTruthy, Output, RenderContext,
    RenderErrorReason, Renderable, handlebars_helper,
};
use serde_json::Value;

use super::text::cut;

pub fn register(registry: &mut Handlebars) {
    registry.register_helper("number", Box::new(number));
    registry.register_helper("percent", Box::new(percent));
    registry.register_helper("plural", Box::new(plural));
    registry.register_helper("truncate", Box::new(truncate));
    registry.register_helper("strip", Box::new(strip));
    registry.register_helper("longdate", Box::new(longdate));
    registry.register_helper("daterange", Box::new(daterange));
    registry.register_helper("change", Box::new(change));
    registry.register_helper("rankmark", Box::new(rankmark));
    registry.register_helper("moved", Box::new(moved));
    registry.register_helper("unusual", Box::new(unusual));
    registry.register_helper("if", Box::new(If(true)));
    registry.register_helper("unless", Box::new(If(false)));
}

handlebars_helper!(number: |n: f64| thousands(n));
handlebars_helper!(percent: |n: f64| format!("{n:.1}%"));
handlebars_helper!(plural: |n: f64, one: str, many: str| {
    let mut said = thousands(n);
    // By the number as read: 0.96 reads "1 visit".
    let word = if said == "1" { one } else { many };
    said.push(' ');
    said.push_str(word);
    said
});
handlebars_helper!(truncate: |text: str, max: u64| cut(text, max as usize));
handlebars_helper!(strip: |hours: array| activity_strip(hours));
handlebars_helper!(longdate: |date: str| date_range(date, date));
handlebars_helper!(daterange: |first: str, last: str| date_range(first, last));
handlebars_helper!(change: |now: Json, before: Json| match (now.as_f64(), before.as_f64()) {
    (Some(now), Some(before)) => percent_change(now, before),
    _ => String::new(),
});
handlebars_helper!(rankmark: |rank: Json, before: Json| match rank.as_u64() {
    Some(rank) => rank_mark(rank, before.as_u64()),
    None => String::new(),
});

handlebars_helper!(moved: |moves: Json| moved_line(moves));
handlebars_helper!(unusual: |flags: Json| unusual_line(flags));

/// How long a driver's name may be in a "what moved" line: it has to fit a phone.
const DRIVER_NAME: usize = 32;

/// The digest's `moved` as one line: `Visitors ▼ 12% (−115): India −80 · Brazil −25; Chats
/// ▲ 30% (+24): t.co +20`. Empty when neither total moved.
pub fn moved_line(moves: &Value) -> String {
    let parts: Vec<String> = [("Visitors", "visitors"), ("Chats", "chats")]
        .into_iter()
        .filter_map(|(label, key)| {
            let total = moves.get(key).filter(|m| m.is_object())?;
            let delta = total.get("change")?.as_i64()?;
            let before = total.get("before").and_then(Value::as_f64).unwrap_or(0.0);
            let now = before + delta as f64;
            let mut part = format!(
                "{label} {} ({})",
                percent_change(now, before),
                signed(delta)
            );
            let drivers = total.get("drivers").and_then(Value::as_array);
            let drivers: Vec<String> = drivers
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    let name = short_source(d.get("name")?.as_str()?);
                    let delta = d.get("change")?.as_i64()?;
                    Some(format!("{} {}", cut(name, DRIVER_NAME), signed(delta)))
                })
                .collect();
            if !drivers.is_empty() {
                part.push_str(": ");
                part.push_str(&drivers.join(" · "));
            }
            Some(part)
        })
        .collect();
    parts.join("; ")
}

/// The digest's `unusual` as one line: `Visitors 31: unusually high for a Tuesday (usually
/// about 12)`, flags joined by ` · `. Empty when nothing is unusual.
pub fn unusual_line(flags: &Value) -> String {
    let flags = flags.as_array().map(Vec::as_slice).unwrap_or_default();
    let said: Vec<String> = flags
        .iter()
        .filter_map(|flag| {
            let metric = flag.get("metric")?.as_str()?;
            let label = match metric {
                "visitors" => "Visitors",
                "chats" => "Chats",
                _ => return None,
            };
            let value = thousands(flag.get("value")?.as_f64()?);
            let usual = thousands(flag.get("usual")?.as_f64()?);
            let period = match flag.get("weekday").and_then(Value::as_str) {
                Some(weekday) => format!("a {weekday}"),
                None => "a week".to_owned(),
            };
            // The kind's escape has been over it: Markdown's turns none_recorded into
            // none\_recorded.
            let direction: String = flag.get("direction")?.as_str()?.chars().filter(char::is_ascii_alphabetic).collect();
            Some(match direction.as_str() {
                "high" => format!("{label} {value}: unusually high for {period} (usually about {usual})"),
                "low" => format!("{label} {value}: unusually low for {period} (usually about {usual})"),
                "nonerecorded" => format!("{label}: no {metric} recorded: tracking may be broken or the data not in yet (usually about {usual} for {period})"),
                _ => return None,
            })
        })
        .collect();
    said.join(" · ")
}

/// A change as a reader writes it: `+20`, `−80` (a minus sign, not a hyphen).
fn signed(delta: i64) -> String {
    match delta {
        c if c < 0 => format!("−{}", thousands(c.unsigned_abs() as f64)),
        c => format!("+{}", thousands(c as f64)),
    }
}

/// A referrer or page without what every one has: `https://www.google.com/` → `google.com`.
/// The kind's escape has been over it, so `https:` may be followed by a zero-width space.
fn short_source(name: &str) -> &str {
    const ZERO_WIDTH: char = '\u{200B}';
    let rest = match name.split_once("//") {
        Some((scheme, rest))
            if matches!(scheme.trim_end_matches(ZERO_WIDTH), "http:" | "https:") =>
        {
            rest
        }
        _ => name,
    };
    let rest = match rest.strip_prefix("www.") {
        Some(host) => host.trim_start_matches(ZERO_WIDTH),
        None => rest,
    };
    match rest.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => rest,
    }
}

/// A total beside its earlier value: `▲ 12%`, `▼ 3%`, `=` (within half a percent), or `new`
/// when there was nothing before to take a percentage of.
pub fn percent_change(now: f64, before: f64) -> String {
    if before <= 0.0 {
        return if now > 0.0 { "new" } else { "=" }.to_owned();
    }
    let delta = ((now - before) / before * 100.0).round();
    if delta == 0.0 {
        "=".to_owned()
    } else if delta > 0.0 {
        format!("▲ {}%", thousands(delta))
    } else {
        format!("▼ {}%", thousands(-delta))
    }
}

/// A ranked entry's move since an earlier ranking: `▲2` up two places, `▼1` down one, `new`
/// where it wasn't ranked then, nothing where it holds its place.
pub fn rank_mark(rank: u64, before: Option<u64>) -> String {
    match before {
        None => "new".to_owned(),
        Some(before) if before > rank => format!("▲{}", before - rank),
        Some(before) if before < rank => format!("▼{}", rank - before),
        Some(_) => String::new(),
    }
}

/// `if` and `unless` that fail on a variable the digest doesn't have: Handlebars' own treat
/// `{{#if totals.visiters}}` as false, so a misspelt condition would pass `check` and hide
/// a section for ever. With this, rendering the busy and the empty sample day catches every
/// misspelling, in every branch, without a second reading of the template's scopes.
struct If(bool);

impl HelperDef for If {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let param = h
            .param(0)
            .ok_or_else(|| RenderErrorReason::ParamNotFoundForIndex("if", 0))?;
        if param.is_value_missing() {
            let name = param.relative_path().map_or("that value", |p| p.as_str());
            return Err(RenderErrorReason::Other(format!("the digest has no {name}")).into());
        }
        let include_zero = h
            .hash_get("includeZero")
            .is_some_and(|v| v.value().is_truthy(false));
        let branch = if param.value().is_truthy(include_zero) == self.0 {
            h.template()
        } else {
            h.inverse()
        };
        match branch {
            Some(template) => template.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

/// "Thu 18 Mar 2021" for one day; "Fri 20 – Sun 22 Nov 2026" for a span, naming the month and
/// year only where they change.
pub fn date_range(first: &str, last: &str) -> String {
    let parse = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d");
    let (Ok(a), Ok(b)) = (parse(first), parse(last)) else {
        return if first == last {
            first.to_owned()
        } else {
            format!("{first} – {last}")
        };
    };
    use chrono::Datelike;
    let start = if a == b {
        return a.format("%a %-d %b %Y").to_string();
    } else if a.year() != b.year() {
        a.format("%a %-d %b %Y")
    } else if a.month() != b.month() {
        a.format("%a %-d %b")
    } else {
        a.format("%a %-d")
    };
    format!("{start} – {}", b.format("%a %-d %b %Y"))
}

/// `1234567` → `1,234,567`; fractions keep one decimal.
pub fn thousands(n: f64) -> String {
    // The tenth is rounded apart from the whole part, which keeps every digit of a large
    // count; a tenth that rounds up to ten carries: 12.96 reads 13.
    let mut whole = n.abs().trunc() as u64;
    let mut tenth = (n.abs().fract() * 10.0).round() as u8;
    if tenth == 10 {
        whole += 1;
        tenth = 0;
    }
    let digits = whole.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3 + 4);
    if n < 0.0 && (whole, tenth) != (0, 0) {
        out.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if tenth != 0 {
        out.push('.');
        out.push(char::from(b'0' + tenth));
    }
    out
}

/// Twenty-four bars, one per hour from midnight; an hour with no activity is a dot so it is
/// never confused with a quiet one.
pub fn activity_strip(hours: &[Value]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let values: Vec<f64> = hours.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect();
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|&v| {
            if v <= 0.0 || max <= 0.0 {
                '·'
            } else {
                BARS[(((v / max) * 8.0).ceil() as usize).clamp(1, 8) - 1]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(12.5), "12.5");
        assert_eq!(thousands(12.96), "13");
        assert_eq!(thousands(-1234.25), "-1,234.3");
        assert_eq!(thousands(-0.04), "0");
        assert_eq!(thousands(999.95), "1,000");
        assert_eq!(thousands(4_503_599_627_370_497.0), "4,503,599,627,370,497");
    }

    #[test]
    fn changes_read_as_direction_and_percent_never_dividing_by_zero() {
        assert_eq!(percent_change(112.0, 100.0), "▲ 12%");
        assert_eq!(percent_change(97.0, 100.0), "▼ 3%");
        assert_eq!(percent_change(100.0, 100.0), "=");
        assert_eq!(percent_change(1000.4, 1000.0), "=");
        assert_eq!(percent_change(5.0, 0.0), "new");
        assert_eq!(percent_change(0.0, 0.0), "=");
        assert_eq!(percent_change(0.0, 40.0), "▼ 100%");
        assert_eq!(percent_change(25_000.0, 10.0), "▲ 249,900%");
        assert_eq!(rank_mark(1, Some(3)), "▲2");
        assert_eq!(rank_mark(4, Some(3)), "▼1");
        assert_eq!(rank_mark(2, Some(2)), "");
        assert_eq!(rank_mark(2, None), "new");
    }

    #[test]
    fn the_helpers_take_the_digests_values_and_say_nothing_without_a_comparison() {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        register(&mut registry);
        let data = json!({"now": 90, "before": {"n": 120}, "none": null, "rank": 1, "was": 2});
        let render = |t: &str| registry.render_template(t, &data).unwrap();
        assert_eq!(render("{{change now before.n}}"), "▼ 25%");
        assert_eq!(render("{{change now none}}"), "");
        assert_eq!(
            render("{{rankmark rank was}}|{{rankmark rank none}}"),
            "▲1|new"
        );
    }

    #[test]
    fn the_strip_scales_to_the_busiest_hour() {
        let hours: Vec<Value> = (0..24)
            .map(|h| json!(if h == 12 { 80 } else { h % 3 * 10 }))
            .collect();
        let bars = activity_strip(&hours);
        assert_eq!(bars.chars().count(), 24);
        assert_eq!(bars.chars().nth(12), Some('█'));
        assert_eq!(bars.chars().next(), Some('·'));
        assert_eq!(bars.chars().nth(1), Some('▁'));
        assert_eq!(bars.chars().nth(2), Some('▂'));
    }

    #[test]
    fn a_misspelt_condition_fails_and_a_real_one_branches() {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        register(&mut registry);
        let data = json!({"n": 0, "more": {"pages": 2}});
        let render = |t: &str| registry.render_template(t, &data);
        assert_eq!(render("{{#if more.pages}}y{{else}}n{{/if}}").unwrap(), "y");
        assert_eq!(render("{{#unless n}}zero{{/unless}}").unwrap(), "zero");
        let err = render("{{#if more.pagez}}y{{/if}}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no more.pagez"), "{err}");
        let err = render("{{#unless nn}}y{{/unless}}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no nn"), "{err}");
    }
}
