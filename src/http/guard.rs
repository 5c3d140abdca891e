//! The door to `/mcp`: refuse while draining, slow down guessers, verify the
//! credential, and hand the pipeline a verified [`Identity`].
//!
//! Every request is authenticated, not just the first of a session, so a
//! revoked API key stops working on the very next request even inside an
//! open session.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::auth::Authenticator;
use crate::pipeline::Identity;
use crate::shutdown::Shutdown;

/// Tracked addresses above which the failure maps are pruned.
const PRUNE_ABOVE: usize = 10_000;

/// The address a failure budget belongs to. An IPv6 client usually controls
/// a whole /64, so that is the unit; otherwise each guess could come from a
/// fresh address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
    }
}

/// Per-client-address budget of failed authentications. When it runs out
/// the address is refused (429) without any credential being checked, until
/// the budget refills, so guessing keys is slow.
pub struct FailureLimiter {
    /// The middleware reports the remaining budget, so the address can be
    /// blocked as soon as the budget is spent (not one guess later).
    failures: RateLimiter<
        IpAddr,
        DefaultKeyedStateStore<IpAddr>,
        DefaultClock,
        StateInformationMiddleware,
    >,
    replenish: Duration,
    blocked: DashMap<IpAddr, Instant>,
}

impl FailureLimiter {
    /// `None` when `per_minute` is 0.
    pub fn new(per_minute: u32) -> Option<FailureLimiter> {
        let n = NonZeroU32::new(per_minute)?;
        let quota = Quota::per_minute(n);
        Some(FailureLimiter {
            failures: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            replenish: quota.replenish_interval(),
            blocked: DashMap::new(),
        })
    }

    /// How long `ip` must still wait, if it is blocked.
    fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let until = *self.blocked.get(&ip)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            self.blocked.remove(&ip);
            None
        }
    }

    /// Count one failure; block the address when its budget is spent.
    fn failed(&self, ip: IpAddr) {
        let wait = match self.failures.check_key(&ip) {
            Ok(state) if state.remaining_burst_capacity() > 0 => None,
            // That failure spent the last of the budget: block until one refills.
            Ok(_) => Some(self.replenish),
            Err(not_until) => Some(not_until.wait_time_from(self.failures.clock().now())),
        };
        if let Some(wait) = wait {
            self.blocked
                .insert(ip, Instant::now() + wait.max(Duration::from_secs(1)));
        }
        // Forget addresses whose budget refilled, so the maps stay bounded by
        // the recently failing addresses, not by every address ever seen.
        if self.blocked.len() + self.failures.len() > PRUNE_ABOVE {
            let now = Instant::now();
            self.blocked.retain(|_, until| *until > now);
            self.failures.retain_recent();
            self.failures.shrink_to_fit();
        }
    }
}

/// State of the guard middleware.
#[derive(Clone)]
pub struct Guard {
    auth: Option<Authenticator>,
    shutdown: Arc<Shutdown>,
    limiter: Arc<FailureLimiter>,
    /// Which principal opened each MCP session. A session id is a bearer of
    /// its own (it appears in receipts and logs), so another caller must not
    /// be able to post into, or replay the events of, someone else's session.
    owners: Arc<DashMap<String, String>>,
}

impl Guard {
    pub fn new(
        auth: Option<Authenticator>,
        shutdown: Arc<Shutdown>,
        limiter: FailureLimiter,
    ) -> Guard {
        Guard {
            auth,
            shutdown,
            limiter: Arc::new(limiter),
            owners: Arc::new(DashMap::new()),
        }
    }
}

/// axum middleware in front of `/mcp`.
pub async fn authenticate(
    State(guard): State<Guard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    if guard.shutdown.is_draining() {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            "tollgate is shutting down\n",
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    }
    let Some(auth) = &guard.auth else {
        // --insecure-no-auth: the session's identity is fixed by the operator.
        return next.run(request).await;
    };
    let ip = client_key(peer.ip());
    if let Some(wait) = guard.limiter.blocked_for(ip) {
        crate::metrics::auth_failure("throttled");
        let secs = wait.as_secs().max(1).to_string();
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications from this address; retry later\n",
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    match auth.authenticate(request.headers()).await {
        Ok(verified) => {
            let session = header_text(request.headers(), SESSION_HEADER);
            if let Some(id) = &session
                && guard
                    .owners
                    .get(id)
                    .is_some_and(|owner| *owner != verified.principal)
            {
                // Indistinguishable from an unknown session, on purpose.
                return (StatusCode::NOT_FOUND, "session not found\n").into_response();
            }
            let principal = verified.principal.clone();
            let closing = request.method() == axum::http::Method::DELETE;
            request.extensions_mut().insert(Identity {
                principal: verified.principal,
                auth: verified.auth,
                roles: verified.roles,
            });
            let response = next.run(request).await;
            if let Some(created) = header_text(response.headers(), SESSION_HEADER) {
                guard.owners.entry(created).or_insert(principal);
            }
            if closing && let Some(id) = session {
                guard.owners.remove(&id);
            }
            response
        }
        Err(e) if e.is_unavailable() => {
            // Our database failed, not the caller: no 401, no strike.
            tracing::error!(reason = %e, "cannot check credentials");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
        Err(e) => {
            guard.limiter.failed(ip);
            crate::metrics::auth_failure(e.kind());
            // The reason is safe to show: AuthError never contains the token.
            tracing::warn!(client = %ip, reason = %e, "authentication failed");
            unauthorized(auth, &e.to_string())
        }
    }
}

const SESSION_HEADER: &str = "mcp-session-id";

fn header_text(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// 401 with the `WWW-Authenticate` challenge MCP clients look for.
fn unauthorized(auth: &Authenticator, reason: &str) -> Response {
    let mut challenge = format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        reason.replace('"', "'")
    );
    if let Some(url) = auth.resource_metadata().as_ref().and_then(metadata_url) {
        challenge.push_str(&format!(", resource_metadata=\"{url}\""));
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        format!("unauthorized: {reason}\n"),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Where RFC 9728 puts the metadata of `resource`: the well-known path is
/// inserted between the host and the resource's path.
pub fn metadata_url(metadata: &serde_json::Value) -> Option<String> {
    let resource = reqwest::Url::parse(metadata.get("resource")?.as_str()?).ok()?;
    let path = resource.path().trim_end_matches('/');
    let mut url = resource.clone();
    url.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
    url.set_query(None);
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_follows_rfc_9728() {
        let m = serde_json::json!({"resource": "https://tg.example.com/mcp"});
        assert_eq!(
            metadata_url(&m).as_deref(),
            Some("https://tg.example.com/.well-known/oauth-protected-resource/mcp")
        );
    }

    #[test]
    fn failures_block_an_address_after_the_budget() {
        let l = FailureLimiter::new(2).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(l.blocked_for(ip).is_none());
        l.failed(ip);
        assert!(l.blocked_for(ip).is_none(), "one failure leaves budget");
        l.failed(ip);
        assert!(
            l.blocked_for(ip).is_some(),
            "the second spends the budget and blocks"
        );
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(l.blocked_for(other).is_none());
    }
}
