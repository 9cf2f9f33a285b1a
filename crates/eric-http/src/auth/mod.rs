//! Who may do what: the static bearer tokens, and signed tokens (JWT) whose claims
//! name the channels their bearer may publish to and subscribe to.
//!
//! A route names what it needs ([`Access::check`]: publishing to a channel, or
//! subscribing to it); a role nothing guards is open to anyone. A token is read from
//! `Authorization: Bearer`, `?access_token=` (percent-decoded) or the token cookie, in
//! that order, and checked once per request.

#[cfg(feature = "jwt")]
mod jwt;
mod pattern;

use std::sync::Arc;
#[cfg(feature = "jwt")]
use std::sync::OnceLock;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

#[cfg(feature = "jwt")]
pub use jwt::{JwtConfig, JwtKey, TokenClaims};
pub use pattern::ChannelPattern;

use crate::error::{Error, Result};
use crate::state::{AppState, HttpConfig};

/// What a request does to a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Create, broadcast, dispatch, remove.
    Publish,
    /// Add a listener, stream, list.
    Subscribe,
}

impl Role {
    fn index(self) -> usize {
        self as usize
    }

    #[cfg(feature = "jwt")]
    fn verb(self) -> &'static str {
        match self {
            Role::Publish => "publish to",
            Role::Subscribe => "subscribe to",
        }
    }
}

/// The server's guards, per role: a static token, a JWT key, both, or neither.
#[derive(Debug, Default)]
pub(crate) struct Auth {
    static_tokens: [Option<String>; 2],
    #[cfg(feature = "jwt")]
    verifiers: [Option<jwt::Verifier>; 2],
    pub(crate) cookie: String,
}

impl Auth {
    pub(crate) fn new(config: &HttpConfig) -> Self {
        #[cfg(feature = "jwt")]
        let verifiers = match &config.jwt {
            Some(jwt) => [&jwt.publisher, &jwt.subscriber].map(|key| {
                key.as_ref()
                    .map(|key| jwt::Verifier::new(key, jwt.require_exp))
            }),
            None => [None, None],
        };
        Auth {
            static_tokens: [config.publish_token.clone(), config.subscribe_token.clone()],
            #[cfg(feature = "jwt")]
            verifiers,
            cookie: config.token_cookie.clone(),
        }
    }

    fn guarded(&self, role: Role) -> bool {
        #[cfg(feature = "jwt")]
        if self.verifiers[role.index()].is_some() {
            return true;
        }
        self.static_tokens[role.index()].is_some()
    }
}

/// What a request was allowed by.
#[derive(Clone, Debug, Default)]
pub(crate) struct Granted {
    /// The `sub` of the signed token that allowed it.
    pub(crate) sub: Option<String>,
    /// When the signed token that allowed it expires (seconds since the epoch).
    pub(crate) expires: Option<u64>,
    /// Allowed by a signed token's claims (not by a static token, nor unguarded).
    pub(crate) by_claims: bool,
}

/// The credentials of a request, checked on demand against what it needs.
pub(crate) struct Access {
    state: Arc<AppState>,
    token: Option<String>,
    #[cfg(feature = "jwt")]
    claims: [OnceLock<std::result::Result<jwt::TokenClaims, jwt::TokenError>>; 2],
}

impl FromRequestParts<Arc<AppState>> for Access {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self> {
        let token = bearer(parts)
            .or_else(|| query_token(parts))
            .or_else(|| cookie_token(parts, &state.auth.cookie));
        Ok(Access {
            state: Arc::clone(state),
            token,
            #[cfg(feature = "jwt")]
            claims: Default::default(),
        })
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn query_token(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned())
}

fn cookie_token(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(std::result::Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

impl Access {
    /// Allowed to do `role` to `channel`: `Unauthorized` (401) without a valid token
    /// where one is needed, `Forbidden` (403) with one that does not name the channel.
    pub(crate) fn check(&self, role: Role, channel: &str) -> Result<Granted> {
        let granted = self.role(role)?;
        #[cfg(feature = "jwt")]
        if granted.by_claims {
            let claims = self.claims(role)?;
            let allowed = match role {
                Role::Publish => claims.may_publish(channel),
                Role::Subscribe => claims.may_subscribe(channel),
            };
            if !allowed {
                return Err(Error::Forbidden(format!(
                    "the token may not {} channel {channel:?}",
                    role.verb()
                )));
            }
        }
        #[cfg(not(feature = "jwt"))]
        let _ = channel;
        Ok(granted)
    }

    /// Whether `channel` may be listed to a bearer allowed `role` (with
    /// [`role`](Self::role) checked first).
    pub(crate) fn may(&self, role: Role, channel: &str) -> bool {
        self.check(role, channel).is_ok()
    }

    /// Allowed to do `role` to some channel: the token is good, not yet for which.
    pub(crate) fn role(&self, role: Role) -> Result<Granted> {
        let auth = &self.state.auth;
        if !auth.guarded(role) {
            return Ok(Granted::default());
        }
        let token = self.token.as_deref().ok_or(Error::Unauthorized)?;
        if let Some(expected) = &auth.static_tokens[role.index()]
            && constant_time_eq(token.as_bytes(), expected.as_bytes())
        {
            return Ok(Granted::default());
        }
        #[cfg(feature = "jwt")]
        if auth.verifiers[role.index()].is_some() {
            let claims = self.claims(role)?;
            return Ok(Granted {
                sub: claims.sub.clone(),
                expires: claims.exp,
                by_claims: true,
            });
        }
        Err(Error::Unauthorized)
    }

    #[cfg(feature = "jwt")]
    fn claims(&self, role: Role) -> Result<&jwt::TokenClaims> {
        let checked = self.claims[role.index()].get_or_init(|| {
            let verifier = self.state.auth.verifiers[role.index()]
                .as_ref()
                .ok_or_else(|| jwt::TokenError::Invalid("no key checks these tokens".into()))?;
            let token = self.token.as_deref().unwrap_or_default();
            verifier.verify(token)
        });
        checked.as_ref().map_err(|err| err.clone().into())
    }
}

/// The listener id for one made under `granted`: a fresh UUID, followed where the
/// token had a `sub` by a tag of that `sub` ([`owner_tag`]), so that the listener is
/// its alone wherever it is stored.
pub(crate) fn listener_id_for(granted: &Granted) -> Option<String> {
    let sub = granted.sub.as_deref().filter(|_| granted.by_claims)?;
    Some(format!("{}.{}", uuid::Uuid::new_v4(), owner_tag(sub)))
}

/// `Forbidden` when the listener belongs to a `sub` other than the one `granted` by,
/// when granted by claims (a static token, or no guard, may use any listener).
pub(crate) fn check_owner(granted: &Granted, listener_id: &str) -> Result<()> {
    if !granted.by_claims {
        return Ok(());
    }
    let Some(owner) = owner_of(listener_id) else {
        return Ok(());
    };
    match granted.sub.as_deref() {
        Some(sub) if owner_tag(sub) == owner => Ok(()),
        _ => Err(Error::Forbidden(format!(
            "listener {listener_id:?} belongs to another subject"
        ))),
    }
}

/// The owner tag of an id made by [`listener_id_for`]: after a UUID and a dot, 32 hex
/// digits.
fn owner_of(listener_id: &str) -> Option<&str> {
    let (uuid, tag) = listener_id.split_once('.')?;
    (uuid.len() == 36 && tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(tag)
}

/// The first 128 bits of SHA-256 of `sub`, in hex: the `sub` cannot be read back from
/// a listener id, and no other `sub` has the same tag.
#[cfg(feature = "jwt")]
fn owner_tag(sub: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(sub.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(not(feature = "jwt"))]
fn owner_tag(_sub: &str) -> String {
    String::new()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
