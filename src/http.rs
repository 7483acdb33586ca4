//! What fetch and deliver share about talking HTTP: which failures are worth another try, how
//! long to wait (backoff with jitter, or the server's `Retry-After`), and reading a body
//! without letting a hostile server fill memory.

use std::future::Future;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub budget: Duration,
}

impl RetryPolicy {
    /// Backoff from half a second, doubling up to 8 s, until `budget` is spent.
    pub fn within(budget: Duration) -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            budget,
        }
    }
}

/// The outcome of one attempt, as the retry loop sees it.
pub enum Attempt<T, E> {
    Done(T),
    /// Worth trying again, after at least `after` if the server said so.
    Retry {
        error: E,
        after: Option<Duration>,
    },
    Fail(E),
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails permanently, or the budget is spent; returns the
    /// last error then.
    pub async fn run<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let mut backoff = self.start();
        loop {
            match attempt().await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { error, after } => match backoff.next(after) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(error),
                },
            }
        }
    }

    /// The waits between attempts that start now.
    pub fn start(&self) -> Backoff {
        Backoff {
            policy: *self,
            started: tokio::time::Instant::now(),
            delay: self.first_delay,
        }
    }
}

/// Where one series of attempts stands in its policy's budget.
pub struct Backoff {
    policy: RetryPolicy,
    started: tokio::time::Instant,
    delay: Duration,
}

impl Backoff {
    /// How long to wait before the next attempt (at least `after` if the server said so), or
    /// None when the budget is spent.
    pub fn next(&mut self, after: Option<Duration>) -> Option<Duration> {
        // Full jitter spreads retries of many teams hitting the same outage.
        let backoff = self.delay.mul_f64(0.5 + fastrand::f64() * 0.5);
        let wait = after
            .unwrap_or(backoff)
            .max(backoff.min(self.policy.first_delay));
        if self.started.elapsed() + wait > self.policy.budget {
            return None;
        }
        self.delay = (self.delay * 2).min(self.policy.max_delay);
        Some(wait)
    }
}

/// Statuses that say "not now" rather than "never".
/// Why a request got no HTTP answer, named from the error's chain of causes: which step failed
/// (DNS, connecting, the TLS handshake, waiting for the answer) and the innermost cause
/// ("Connection refused (os error 111)"). Never the URL.
#[derive(Debug, Clone, PartialEq)]
pub struct NoAnswer {
    /// Failed before the request was sent (DNS, connect, TLS): it certainly did not arrive.
    pub before_sending: bool,
    pub cause: String,
}

impl NoAnswer {
    /// `connect_timeout` and `timeout` are the client's, for the error to say which ran out.
    pub fn of(e: &reqwest::Error, connect_timeout: Duration, timeout: Duration) -> NoAnswer {
        let mut causes: Vec<String> = Vec::new();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !causes.iter().any(|c| c.contains(&text)) {
                causes.push(text);
            }
            source = cause.source();
        }
        // hyper's outer causes say at which step (TCP, DNS, else the TLS handshake), the
        // innermost what happened.
        // reqwest's own text names the URL, which may hold an account or a secret.
        let innermost = causes.last().cloned().unwrap_or_else(|| {
            let what = if e.is_redirect() {
                "too many redirects"
            } else if e.is_decode() || e.is_body() {
                "the answer could not be read"
            } else if e.is_builder() {
                "the request could not be built"
            } else {
                "no answer"
            };
            what.to_owned()
        });
        let said = |what: &str| causes.iter().any(|c| c.contains(what));
        let (before_sending, cause) = if e.is_connect() {
            let cause = if e.is_timeout() {
                format!("could not connect within {}", seconds(connect_timeout))
            } else if said("dns error") {
                format!("could not resolve the host: {innermost}")
            } else if said("tcp connect error") {
                format!("could not connect: {innermost}")
            } else {
                format!("TLS handshake failed: {innermost}")
            };
            (true, cause)
        } else if e.is_timeout() {
            let waited = seconds(timeout);
            (false, format!("timed out after {waited} without an answer"))
        } else {
            let cause = format!("the connection failed before an answer: {innermost}");
            (false, cause)
        };
        NoAnswer {
            before_sending,
            cause,
        }
    }
}

/// "30 s", or "0.5 s" for a test's short timeout.
fn seconds(d: Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{} s", d.as_secs()),
        _ => format!("{:.1} s", d.as_secs_f64()),
    }
}

/// `host:port` of a URL, for an error to say where it went without its path or query.
pub fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => "(no host)".to_owned(),
    }
}

pub fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Network-level errors: the request may not have reached the server, or its answer was lost.
pub fn is_transient_error(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
}

/// `Retry-After` as delta-seconds or an HTTP date, capped so a server can't park us forever.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(Duration::from_secs(300)))
}

/// Reads at most `cap` bytes of body; a larger body is an error, not a truncated read.
pub async fn read_capped(mut response: Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(BodyError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(e.without_url()))?
    {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the response body is larger than {} KiB", .0 / 1024)]
    TooLarge(usize),
    #[error("the response body could not be read: {0}")]
    Read(reqwest::Error),
}

/// What stands for an excerpt that echoed a secret in a form no replacement can find.
pub const WITHHELD: &str = "(excerpt withheld: it echoed a secret)";

/// `text` with every credential in `secrets` replaced, for a body that a server may have
/// echoed a request into ("Cannot POST /services/T0/B0/XXXX", "invalid key abc123"). One
/// echoed in another form (upper-cased, percent-encoded or decoded, JSON-escaped) can't be
/// cut out of the original, so the whole text is withheld.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let secrets: Vec<&str> = secrets.iter().copied().filter(|s| s.len() >= 4).collect();
    let text = secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret, "[redacted]")
    });
    let forms = |text: &str| {
        let decoded = percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned();
        let unescaped = json_unescaped(text);
        let both = json_unescaped(&decoded);
        [text.to_owned(), decoded, unescaped, both].map(|form| form.to_lowercase())
    };
    let secret_forms: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
    let echoed = forms(&text);
    if (secret_forms.iter()).any(|secret| echoed.iter().any(|form| form.contains(secret))) {
        return WITHHELD.to_owned();
    }
    // An excerpt cut in the middle of a secret ends with its first characters, in any form.
    let Some(kept) = text.strip_suffix('…') else {
        return text;
    };
    let cut = kept.char_indices().map(|(i, _)| i).find(|&i| {
        let tail = &kept[i..];
        let starts = |form: &String| secret_forms.iter().any(|s| s.starts_with(form.as_str()));
        tail.len() >= 4 && forms(tail).iter().any(starts)
    });
    match cut {
        Some(i) => format!("{}[redacted]…", &kept[..i]),
        None => text,
    }
}

/// `text` with JSON's string escapes (`\u005f`, `\/`, `\"`) read back; anything else as it is.
fn json_unescaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let (read, len) = match escape.as_bytes().get(1) {
            Some(b'u') => match escape
                .get(2..6)
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            {
                Some(code) => (char::from_u32(code), 6),
                None => (Some('\\'), 1),
            },
            Some(&c @ (b'/' | b'\\' | b'"')) => (Some(char::from(c)), 2),
            _ => (Some('\\'), 1),
        };
        out.extend(read);
        rest = &escape[len..];
    }
    out.push_str(rest);
    out
}

/// A short, single-line excerpt of a body for an error message.
/// Control characters (a terminal's escape sequences) and the invisible ones that reorder or
/// break text (bidi overrides, line separators) are shown escaped: what a server sent must
/// not rewrite the log line it lands in.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .flat_map(|c| {
            let hidden = c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            let shown: Box<dyn Iterator<Item = char>> = if hidden {
                Box::new(c.escape_unicode())
            } else {
                Box::new(std::iter::once(c))
            };
            shown
        })
        .collect();
    match flat.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2026 07:28:03 GMT"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2026 07:27:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(
            retry_after(&headers("86400"), now),
            Some(Duration::from_secs(300))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_budget_is_spent() {
        let policy = RetryPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
            budget: Duration::from_secs(10),
        };
        let mut attempts = 0;
        let result: Result<(), &str> = policy
            .run(|| {
                attempts += 1;
                async {
                    Attempt::Retry {
                        error: "down",
                        after: None,
                    }
                }
            })
            .await;
        assert_eq!(result, Err("down"));
        assert!((3..=8).contains(&attempts), "{attempts} attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_not_retried() {
        let mut attempts = 0;
        let result: Result<(), &str> = RetryPolicy::within(Duration::from_secs(60))
            .run(|| {
                attempts += 1;
                async { Attempt::Fail("no") }
            })
            .await;
        assert_eq!((result, attempts), (Err("no"), 1));
    }

    #[test]
    fn secrets_are_redacted_whole_and_where_an_excerpt_cut_them() {
        let key = "sk_live_0123456789abcdef";
        assert_eq!(
            redact(&format!("bad key {key}, try again"), &[key]),
            "bad key [redacted], try again"
        );
        let page = format!("{} Bearer {key} rejected", "x".repeat(100));
        let cut = excerpt(page.as_bytes());
        assert!(cut.ends_with('…') && cut.contains("Bearer sk_"), "{cut}");
        assert!(redact(&cut, &[key]).ends_with("Bearer [redacted]…"));
        assert_eq!(redact("abc", &["abc"]), "abc", "too short to be a secret");
    }

    #[test]
    fn a_secret_echoed_in_another_form_withholds_the_whole_excerpt() {
        let key = "sk_live_0123/abc+def";
        for echoed in [
            "invalid key SK_LIVE_0123/ABC+DEF",
            "invalid key sk_live_0123%2Fabc%2Bdef",
            "invalid key sk%5Flive%5F0123%2fabc%2bdef",
            r#"{"error": "invalid key sk\u005flive\u005f0123\/abc+def"}"#,
            r#"{"error": "invalid key SK\u005FLIVE_0123\/ABC%2BDEF"}"#,
        ] {
            assert_eq!(redact(echoed, &[key]), WITHHELD, "{echoed}");
        }
        // Cut off in the middle of an upper-cased echo.
        let page = format!("{} bad key SK_LIVE_0123/ABC+DEF rejected", "x".repeat(100));
        let cut = excerpt(page.as_bytes());
        assert!(cut.ends_with('…') && cut.contains("SK_LI"), "{cut}");
        let redacted = redact(&cut, &[key]);
        assert!(redacted.ends_with("bad key [redacted]…"), "{redacted}");
        // A token the URL carries percent-encoded, echoed decoded.
        assert_eq!(
            redact("unknown token a+b/c==", &["a%2Bb%2Fc%3D%3D"]),
            WITHHELD
        );
        // Text that only looks like part of one stays.
        let kept = "invalid key sk_live_0123, try again";
        assert_eq!(redact(kept, &[key]), kept);
        assert_eq!(
            json_unescaped(r#"a\u005fb\/c\"d\q\u12"#),
            r#"a_b/c"d\q\u12"#
        );
    }

    #[test]
    fn excerpts_show_escapes_and_bidi_overrides_escaped() {
        let hostile = "bad \u{1b}[31mRED\u{1b}[0m \u{202E}txt.exe\u{2028}next";
        let shown = excerpt(hostile.as_bytes());
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{202E}'),
            "{shown:?}"
        );
        assert!(!shown.contains('\u{2028}'), "{shown:?}");
        assert!(
            shown.contains("\\u{1b}[31mRED") && shown.contains("\\u{202e}txt.exe"),
            "{shown}"
        );
    }

    #[test]
    fn excerpts_are_one_short_line() {
        let page = format!("<html>\n  <body>{}</body>", "x".repeat(500));
        let short = excerpt(page.as_bytes());
        assert!(!short.contains('\n'));
        assert_eq!(short.chars().count(), 121);
    }
}
