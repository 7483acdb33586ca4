//! Fetch: one day of a team's Visitor Analytics, all four reports, concurrently.
//!
//! The API is loose (numbers arrive as numbers or strings, error pages arrive as HTML), so every
//! body is parsed here into [`DayReport`] or rejected with an error that names the report and
//! the account. A report that can't be fetched fails the whole day: never a digest of zeros.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use tokio::sync::Semaphore;

mod parse;
pub use parse::{ChatSource, CountryRow, DayReport, HourRow, hour_of_label};

use crate::config::{AccountId, Secret, Team};
use crate::http::{self, Attempt, RetryPolicy};
use crate::schedule::Window;

/// The largest report body we accept; a real day is a few hundred KiB at most.
const BODY_CAP: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    VisitorsByLocation,
    MostActiveVisitTimes,
    PagesWithMostChats,
    VisitorReference,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::VisitorsByLocation,
        Endpoint::MostActiveVisitTimes,
        Endpoint::PagesWithMostChats,
        Endpoint::VisitorReference,
    ];

    /// The last segment of the endpoint's path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::VisitorsByLocation => "visitors-by-location",
            Endpoint::MostActiveVisitTimes => "most-active-visit-times",
            Endpoint::PagesWithMostChats => "pages-with-most-chats",
            Endpoint::VisitorReference => "visitor-reference",
        }
    }

    /// The key under `data` that holds the report.
    pub fn key(self) -> &'static str {
        match self {
            Endpoint::VisitorsByLocation => "visitorsByLocation",
            Endpoint::MostActiveVisitTimes => "mostActiveVisitTimes",
            Endpoint::PagesWithMostChats => "pagesWithMostChats",
            Endpoint::VisitorReference => "visitorReference",
        }
    }

    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{endpoint} report for account {account}: {problem}")]
pub struct FetchError {
    pub endpoint: Endpoint,
    pub account: AccountId,
    pub problem: Problem,
}

impl FetchError {
    /// The error for a team's report, with the team's API key scrubbed from anything the
    /// server said: an error page may echo the request's headers.
    fn new(team: &Team, endpoint: Endpoint, problem: Problem) -> FetchError {
        let key = [team.api_key.expose()];
        let scrub = |text: String| http::redact(&text, &key);
        let problem = match problem {
            Problem::Status { status, excerpt } => Problem::Status {
                status,
                excerpt: scrub(excerpt),
            },
            Problem::NotJson { reason, excerpt } => Problem::NotJson {
                reason: scrub(reason),
                excerpt: scrub(excerpt),
            },
            Problem::Unsuccessful(message) => Problem::Unsuccessful(message.map(scrub)),
            Problem::Shape(text) => Problem::Shape(scrub(text)),
            Problem::Network { host, cause } => Problem::Network {
                host: scrub(host),
                cause: scrub(cause),
            },
            other => other,
        };
        FetchError {
            endpoint,
            account: team.account_id.clone(),
            problem,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("API key rejected (HTTP {0}): check the team's api_key / api_key_env for this account")]
    Unauthorized(u16),
    #[error(
        "not found (HTTP 404): check account_id and acquire.base_url; the endpoint path may have changed"
    )]
    NotFound,
    #[error("HTTP {status}: {excerpt}")]
    Status { status: u16, excerpt: String },
    #[error("rate limited (HTTP 429) until the retry budget ran out")]
    RateLimited,
    #[error("could not reach the API at {host}: {cause}")]
    Network { host: String, cause: String },
    #[error("{0}")]
    Body(#[from] http::BodyError),
    #[error("the response is not JSON ({reason}); it began: {excerpt}")]
    NotJson { reason: String, excerpt: String },
    #[error("the API answered success: false{}", .0.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Unsuccessful(Option<String>),
    #[error("unexpected shape: {0}")]
    Shape(String),
}

/// The Acquire API client: one connection pool, one cap on concurrent requests shared by every
/// team, and a retry policy.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The connect timeout and the whole request's, for errors to say which ran out.
    timeouts: (Duration, Duration),
    in_flight: Arc<Semaphore>,
    retry: RetryPolicy,
}

impl Client {
    pub fn with_retry(timeout: Duration, concurrency: usize, retry: RetryPolicy) -> Client {
        let connect_timeout = timeout.min(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .user_agent(concat!("acquire-digest/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend is compiled in");
        Client {
            http,
            timeouts: (connect_timeout, timeout),
            in_flight: Arc::new(Semaphore::new(concurrency.max(1))),
            retry,
        }
    }

    /// All four reports of the window's day for one team.
    pub async fn fetch_day(&self, team: &Team, window: &Window) -> Result<DayReport, FetchError> {
        let query = WindowQuery::of(window);
        let request = |endpoint| self.fetch_report(team, &query, endpoint);
        let (countries, hours, pages, referrers) = tokio::try_join!(
            request(Endpoint::VisitorsByLocation),
            request(Endpoint::MostActiveVisitTimes),
            request(Endpoint::PagesWithMostChats),
            request(Endpoint::VisitorReference),
        )?;
        DayReport::parse([&countries, &hours, &pages, &referrers])
            .map_err(|(endpoint, problem)| FetchError::new(team, endpoint, problem))
    }

    /// The window's country rows alone: they hold both headline totals, so a day needed only
    /// for its totals costs one request, not four.
    pub async fn fetch_countries(
        &self,
        team: &Team,
        window: &Window,
    ) -> Result<Vec<CountryRow>, FetchError> {
        let body = self
            .fetch_report(team, &WindowQuery::of(window), Endpoint::VisitorsByLocation)
            .await?;
        parse::countries(&body)
            .map_err(|(endpoint, problem)| FetchError::new(team, endpoint, problem))
    }

    /// One request with the team's key, for yesterday's smallest report and without retries:
    /// whether the account's API accepts the key (`check --online`).
    pub async fn check_key(&self, team: &Team) -> Result<(), FetchError> {
        let window = Window::yesterday(team.zone, chrono::Utc::now());
        self.fetch_report(
            team,
            &WindowQuery::of(&window),
            Endpoint::VisitorsByLocation,
        )
        .await
        .map(drop)
    }

    /// The rows of one report, as JSON values still to be parsed.
    async fn fetch_report(
        &self,
        team: &Team,
        query: &WindowQuery,
        endpoint: Endpoint,
    ) -> Result<Vec<u8>, FetchError> {
        let mut url = endpoint_url(&team.api_base, endpoint);
        url.query_pairs_mut().extend_pairs(&query.pairs);
        let attempt = || async {
            let _permit = self.in_flight.acquire().await.expect("never closed");
            let started = std::time::Instant::now();
            let sent = self
                .http
                .get(url.clone())
                .header(AUTHORIZATION, bearer(&team.api_key))
                .send()
                .await;
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            crate::telemetry::api_request(endpoint.path(), status, started.elapsed());
            classify(sent, endpoint, &url, self.timeouts).await
        };
        self.retry
            .run(attempt)
            .await
            .map_err(|problem| FetchError::new(team, endpoint, problem))
    }
}

/// A window as the API is asked for it: written once for a day's four reports.
struct WindowQuery {
    pairs: [(&'static str, String); 4],
}

impl WindowQuery {
    fn of(window: &Window) -> WindowQuery {
        let pairs = [
            ("start_date", window.start_date()),
            ("end_date", window.end_date()),
            ("offset", window.offset_text()),
            ("output", "json".to_owned()),
        ];
        WindowQuery { pairs }
    }
}

fn bearer(key: &Secret) -> String {
    format!("Bearer {}", key.expose())
}

fn endpoint_url(base: &url::Url, endpoint: Endpoint) -> url::Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("http(s) URLs have paths")
        .pop_if_empty()
        .extend(["v1", "analytics", "chat", endpoint.path()]);
    url
}

async fn classify(
    sent: Result<reqwest::Response, reqwest::Error>,
    endpoint: Endpoint,
    url: &url::Url,
    (connect_timeout, timeout): (Duration, Duration),
) -> Attempt<Vec<u8>, Problem> {
    let host = || http::host_of(url);
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            let cause = http::NoAnswer::of(&e, connect_timeout, timeout).cause;
            let error = Problem::Network {
                host: host(),
                cause,
            };
            return match http::is_transient_error(&e) {
                true => Attempt::Retry { error, after: None },
                false => Attempt::Fail(error),
            };
        }
    };
    let status = response.status();
    let after = http::retry_after(response.headers(), SystemTime::now());
    if status.is_success() {
        return match http::read_capped(response, BODY_CAP).await {
            Ok(body) => Attempt::Done(body),
            Err(http::BodyError::Read(e)) => Attempt::Retry {
                error: Problem::Network {
                    host: host(),
                    cause: http::NoAnswer::of(&e, connect_timeout, timeout).cause,
                },
                after: None,
            },
            Err(e) => Attempt::Fail(e.into()),
        };
    }
    let body = http::read_capped(response, 64 * 1024)
        .await
        .unwrap_or_default();
    tracing::debug!(%endpoint, status = status.as_u16(), "Acquire answered with an error status");
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Attempt::Fail(Problem::Unauthorized(status.as_u16()))
        }
        StatusCode::NOT_FOUND => Attempt::Fail(Problem::NotFound),
        StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
            error: Problem::RateLimited,
            after,
        },
        _ => {
            let problem = Problem::Status {
                status: status.as_u16(),
                excerpt: http::excerpt(&body),
            };
            if http::is_transient(status) {
                Attempt::Retry {
                    error: problem,
                    after,
                }
            } else {
                Attempt::Fail(problem)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_append_to_the_base_path() {
        let base = url::Url::parse("http://127.0.0.1:9/acme/api").unwrap();
        assert_eq!(
            endpoint_url(&base, Endpoint::VisitorReference).as_str(),
            "http://127.0.0.1:9/acme/api/v1/analytics/chat/visitor-reference"
        );
        let slash = url::Url::parse("https://acme.acquire.io/api/").unwrap();
        assert_eq!(
            endpoint_url(&slash, Endpoint::PagesWithMostChats).as_str(),
            "https://acme.acquire.io/api/v1/analytics/chat/pages-with-most-chats"
        );
    }
}
