//! `eric serve`'s flags for who may do what: static tokens and signed tokens (JWT).

use std::path::PathBuf;

use eric::http::{HttpConfig, JwtConfig, JwtKey};

/// Who may publish and subscribe. Static tokens and signed tokens may be on at once.
#[derive(clap::Args)]
pub(crate) struct TokenArgs {
    /// A bearer token required to create, publish and remove (any channel).
    #[arg(long, env = "ERIC_PUBLISH_TOKEN")]
    publish_token: Option<String>,
    /// A bearer token (or ?access_token=) required to subscribe and stream (any channel).
    #[arg(long, env = "ERIC_SUBSCRIBE_TOKEN")]
    subscribe_token: Option<String>,
    /// Accept signed tokens (HS256) made with this secret, for publishers and
    /// subscribers: their `eric` claim names the channels they may use.
    #[arg(long, env = "ERIC_JWT_SECRET", conflicts_with = "jwt_public_key")]
    jwt_secret: Option<String>,
    /// Accept signed tokens checked with this public key (PEM: RS256, ES256, EdDSA…),
    /// for publishers and subscribers.
    #[arg(long, value_name = "FILE", env = "ERIC_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// A secret for publishers' tokens alone (in place of --jwt-secret's).
    #[arg(
        long,
        env = "ERIC_JWT_PUBLISHER_SECRET",
        conflicts_with = "jwt_publisher_public_key"
    )]
    jwt_publisher_secret: Option<String>,
    /// A public key for publishers' tokens alone.
    #[arg(long, value_name = "FILE", env = "ERIC_JWT_PUBLISHER_PUBLIC_KEY")]
    jwt_publisher_public_key: Option<PathBuf>,
    /// A secret for subscribers' tokens alone (in place of --jwt-secret's).
    #[arg(
        long,
        env = "ERIC_JWT_SUBSCRIBER_SECRET",
        conflicts_with = "jwt_subscriber_public_key"
    )]
    jwt_subscriber_secret: Option<String>,
    /// A public key for subscribers' tokens alone.
    #[arg(long, value_name = "FILE", env = "ERIC_JWT_SUBSCRIBER_PUBLIC_KEY")]
    jwt_subscriber_public_key: Option<PathBuf>,
    /// Refuse signed tokens without `exp` (an `exp` present is always enforced, and a
    /// stream ends when its token expires).
    #[arg(long, env = "ERIC_JWT_REQUIRE_EXP")]
    jwt_require_exp: bool,
    /// The cookie a browser's token may come in (after Authorization and
    /// ?access_token=).
    #[arg(long, default_value = "eric_token", env = "ERIC_TOKEN_COOKIE")]
    token_cookie: String,
}

impl TokenArgs {
    /// `config` with these guards.
    pub(crate) fn apply(
        self,
        config: HttpConfig,
    ) -> Result<HttpConfig, Box<dyn std::error::Error>> {
        let both = key(self.jwt_secret, self.jwt_public_key)?;
        let publisher =
            key(self.jwt_publisher_secret, self.jwt_publisher_public_key)?.or_else(|| both.clone());
        let subscriber = key(self.jwt_subscriber_secret, self.jwt_subscriber_public_key)?.or(both);
        let jwt = (publisher.is_some() || subscriber.is_some()).then(|| {
            let mut jwt = JwtConfig::default().require_exp(self.jwt_require_exp);
            jwt.publisher = publisher;
            jwt.subscriber = subscriber;
            jwt
        });
        Ok(config
            .publish_token(self.publish_token)
            .subscribe_token(self.subscribe_token)
            .jwt(jwt)
            .token_cookie(self.token_cookie))
    }
}

fn key(
    secret: Option<String>,
    public_key: Option<PathBuf>,
) -> Result<Option<JwtKey>, Box<dyn std::error::Error>> {
    if let Some(secret) = secret {
        return Ok(Some(JwtKey::secret(secret)?));
    }
    let Some(path) = public_key else {
        return Ok(None);
    };
    let pem = std::fs::read(&path)
        .map_err(|err| format!("cannot read the JWT public key {}: {err}", path.display()))?;
    Ok(Some(JwtKey::public_key_pem(&pem)?))
}
