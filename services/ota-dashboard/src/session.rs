//! Logging in and out, the session every page needs ([`User`]) and the CSRF
//! check of every state-changing form ([`User::check_csrf`]).

use axum::extract::{FromRequestParts, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use http::header::{COOKIE, SET_COOKIE};
use http::request::Parts;
use maud::html;
use ota_auth::sessions::{Session, SESSION_TTL};
use ota_auth::{AuthError, Role};
use ota_common::secret::constant_time_eq;
use serde::Deserialize;

use crate::{layout, DashError, DashState};

const COOKIE_NAME: &str = "ota_session";

/// The logged-in user of a page. Without a live session the page answers
/// with a redirect to the login form, which comes back afterwards.
pub struct User(pub Session);

impl User {
    pub fn role(&self) -> Role {
        self.0.token.role
    }

    pub fn may(&self, role: Role) -> bool {
        self.role() >= role
    }

    pub fn require(&self, role: Role) -> Result<(), DashError> {
        Ok(self.0.token.require(role)?)
    }

    /// A form's `csrf` field against the session's, in constant time.
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<(), DashError> {
        match sent {
            Some(s) if constant_time_eq(s.as_bytes(), self.0.csrf.as_bytes()) => Ok(()),
            _ => Err(DashError::Csrf),
        }
    }
}

fn cookie_secret(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<DashState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &DashState) -> Result<Self, Response> {
        let login = || {
            // Only a page is worth coming back to; a form post is not.
            let next = match parts.method {
                http::Method::GET => parts.uri.path_and_query().map(|p| p.as_str()),
                _ => None,
            };
            let to = match next {
                Some(next) => format!("/ui/login?next={}", encode(next)),
                None => "/ui/login".to_owned(),
            };
            Redirect::to(&to).into_response()
        };
        let Some(secret) = cookie_secret(&parts.headers) else {
            return Err(login());
        };
        match s.sessions.get(secret).await {
            Ok(session) => Ok(User(session)),
            Err(AuthError::BadToken) => Err(login()),
            Err(e) => Err(DashError::from(e).into_response()),
        }
    }
}

/// Percent-encodes a path for a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where to go after login: a dashboard path, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("/ui//") && !n.contains('\\') => n,
        _ => "/ui/campaigns",
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(Query(q): Query<LoginQuery>) -> Response {
    login_form(q.next.as_deref(), None, http::StatusCode::OK)
}

fn login_form(next: Option<&str>, problem: Option<&str>, status: http::StatusCode) -> Response {
    let body = html! {
        section.login {
            h1 { "Sign in" }
            p { "Paste a management API token (" code { "ota tokens create" } ", or the "
                code { "admin.token" } " file in the data directory)." }
            @if let Some(p) = problem { p.problem role="alert" { (p) } }
            form method="post" action="/ui/login" {
                input type="hidden" name="next" value=(safe_next(next));
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    (status, layout::bare("Sign in", body)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

pub async fn login(State(s): State<DashState>, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref()).to_owned();
    if f.token.trim().is_empty() {
        return login_form(
            Some(&next),
            Some("Enter a token."),
            http::StatusCode::BAD_REQUEST,
        );
    }
    match s.sessions.login(&f.token).await {
        Ok((secret, session)) => {
            tracing::info!(principal = %session.token.principal, token = %session.token.name, "dashboard login");
            let cookie = format!(
                "{COOKIE_NAME}={secret}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
                SESSION_TTL.as_secs(),
                if s.secure_cookies { "; Secure" } else { "" }
            );
            ([(SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
        }
        Err(AuthError::BadToken) => {
            metrics::counter!("ota_auth_failures_total", "reason" => "invalid").increment(1);
            login_form(
                Some(&next),
                Some("That token is not valid: it is mistyped, unknown or revoked."),
                http::StatusCode::UNAUTHORIZED,
            )
        }
        Err(e) => DashError::from(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    user: User,
    State(s): State<DashState>,
    headers: http::HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, DashError> {
    user.check_csrf(f.csrf.as_deref())?;
    if let Some(secret) = cookie_secret(&headers) {
        s.sessions.logout(secret).await?;
    }
    let gone = format!("{COOKIE_NAME}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(SET_COOKIE, gone)], Redirect::to("/ui/login")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(safe_next(Some("/ui/vehicles/X")), "/ui/vehicles/X");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/ui//evil.example",
            "/api/v1/tokens",
            "/ui/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/campaigns", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/campaigns");
    }

    #[test]
    fn next_is_encoded() {
        assert_eq!(
            encode("/ui/campaigns?state=running&x=a b"),
            "/ui/campaigns%3Fstate%3Drunning%26x%3Da%20b"
        );
    }
}
