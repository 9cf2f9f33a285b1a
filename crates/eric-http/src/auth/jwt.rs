//! Signed tokens (JWT): their keys, and the claims eric reads from them.

use std::sync::Once;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use super::pattern::ChannelPattern;
use crate::error::{Error, Result};

/// A key that checks the signature of tokens: a shared secret (HS256, HS384, HS512)
/// or a public key in PEM (RSA: RS256…PS512; EC: ES256, ES384; Ed25519: EdDSA).
/// A token signed with any other algorithm, `none` included, is refused.
#[derive(Clone)]
pub struct JwtKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("JwtKey")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// A shared secret (HMAC: HS256, HS384 or HS512).
    pub fn secret(secret: impl AsRef<[u8]>) -> Result<Self> {
        let key = DecodingKey::from_secret(secret.as_ref()).map_err(bad_key)?;
        Ok(Self::of_family(key, AlgorithmFamily::Hmac))
    }

    /// A public key in PEM: RSA (PKCS#1 or SPKI), EC (P-256 or P-384) or Ed25519, told
    /// apart by what the PEM holds.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self> {
        install_crypto();
        type Parse = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;
        let attempts: [(Parse, AlgorithmFamily); 3] = [
            (DecodingKey::from_rsa_pem, AlgorithmFamily::Rsa),
            (DecodingKey::from_ec_pem, AlgorithmFamily::Ec),
            (DecodingKey::from_ed_pem, AlgorithmFamily::Ed),
        ];
        for (parse, family) in attempts {
            if let Ok(key) = parse(pem) {
                return Ok(Self::of_family(key, family));
            }
        }
        Err(Error::Config(
            "the JWT public key is not an RSA, EC or Ed25519 public key in PEM".into(),
        ))
    }

    /// Checks `token` as `eric serve` does (signature, algorithm, `exp` if present or
    /// `require_exp`) and returns what it allows: for an application that mounts eric's
    /// router beside routes of its own, and guards those with the same tokens.
    ///
    /// ```
    /// use eric_http::JwtKey;
    /// use jsonwebtoken::{EncodingKey, Header};
    ///
    /// let claims = serde_json::json!({"eric": {"subscribe": ["room-*"]}, "sub": "ada"});
    /// let secret = EncodingKey::from_secret(b"s3cret").unwrap();
    /// let token = jsonwebtoken::encode(&Header::default(), &claims, &secret).unwrap();
    ///
    /// let allowed = JwtKey::secret("s3cret")?.verify(&token, false)?;
    /// assert!(allowed.may_subscribe("room-1"));
    /// assert!(!allowed.may_publish("room-1"));
    /// assert_eq!(allowed.sub(), Some("ada"));
    /// assert!(JwtKey::secret("other")?.verify(&token, false).is_err());
    /// # Ok::<(), eric_http::Error>(())
    /// ```
    pub fn verify(&self, token: &str, require_exp: bool) -> Result<TokenClaims> {
        Verifier::new(self, require_exp)
            .verify(token)
            .map_err(Error::from)
    }

    fn of_family(key: DecodingKey, family: AlgorithmFamily) -> Self {
        install_crypto();
        JwtKey {
            key,
            algorithms: family.algorithms().to_vec(),
        }
    }
}

fn bad_key(err: jsonwebtoken::errors::Error) -> Error {
    Error::Config(format!("bad JWT key: {err}"))
}

/// jsonwebtoken picks its cryptography at run time; with only `rust_crypto` enabled it
/// finds it alone, but a program that also enables `aws_lc_rs` (feature unification)
/// must have one installed, or decoding panics. Installs eric's choice if none is.
fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        }
    });
}

/// Signed tokens: the key publishers' tokens are checked with and the key
/// subscribers' are (one key for both, or one each; a role without a key is left to
/// the static token, if any), and whether `exp` is required.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct JwtConfig {
    /// Checks the tokens of routes that publish, create and remove.
    pub publisher: Option<JwtKey>,
    /// Checks the tokens of routes that subscribe and stream.
    pub subscriber: Option<JwtKey>,
    /// Refuse tokens without `exp` (a present `exp` is always enforced).
    pub require_exp: bool,
}

impl JwtConfig {
    /// One key for every token.
    pub fn new(key: JwtKey) -> Self {
        JwtConfig {
            publisher: Some(key.clone()),
            subscriber: Some(key),
            require_exp: false,
        }
    }

    /// Checks publishers' tokens with `key`.
    pub fn publisher_key(mut self, key: JwtKey) -> Self {
        self.publisher = Some(key);
        self
    }

    /// Checks subscribers' tokens with `key`.
    pub fn subscriber_key(mut self, key: JwtKey) -> Self {
        self.subscriber = Some(key);
        self
    }

    /// Refuses tokens without `exp`.
    pub fn require_exp(mut self, required: bool) -> Self {
        self.require_exp = required;
        self
    }
}

/// Checks tokens with one key.
#[derive(Debug)]
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub(crate) fn new(key: &JwtKey, require_exp: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = key.algorithms.clone();
        // A stream ends when its token expires: a token accepted after its `exp` would
        // open a stream that ends at once, and the client would loop.
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        if require_exp {
            validation.required_spec_claims.insert("exp".to_owned());
        }
        Verifier {
            key: key.key.clone(),
            validation,
        }
    }

    /// The token's claims, if its signature, algorithm and times are good.
    pub(crate) fn verify(&self, token: &str) -> std::result::Result<TokenClaims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation).map_err(
            |err| match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::Invalid(format!("the token has no {claim:?} claim"))
                }
                _ => TokenError::Invalid(format!("the token is not valid: {err}")),
            },
        )?;
        Ok(TokenClaims::from(data.claims))
    }
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    Expired,
    Invalid(String),
}

impl From<TokenError> for Error {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Expired => Error::TokenExpired,
            TokenError::Invalid(why) => Error::InvalidToken(why),
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    eric: EricClaim,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

/// `{"eric": {"subscribe": [...], "publish": [...]}}`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct EricClaim {
    subscribe: Vec<String>,
    publish: Vec<String>,
}

/// What a checked token lets its bearer do: its `eric` claim's lists, its `sub` and
/// its `exp`.
#[derive(Clone, Debug)]
pub struct TokenClaims {
    pub(crate) subscribe: Vec<ChannelPattern>,
    pub(crate) publish: Vec<ChannelPattern>,
    pub(crate) sub: Option<String>,
    pub(crate) exp: Option<u64>,
}

impl TokenClaims {
    /// Whether the token names `channel` in its `subscribe` list.
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(channel))
    }

    /// Whether the token names `channel` in its `publish` list.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| p.matches(channel))
    }

    /// The token's `sub`.
    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// The token's `exp` (seconds since the Unix epoch).
    pub fn exp(&self) -> Option<u64> {
        self.exp
    }
}

impl From<RawClaims> for TokenClaims {
    fn from(raw: RawClaims) -> Self {
        let patterns = |list: Vec<String>| list.iter().map(|p| ChannelPattern::new(p)).collect();
        TokenClaims {
            subscribe: patterns(raw.eric.subscribe),
            publish: patterns(raw.eric.publish),
            sub: raw.sub,
            exp: raw.exp,
        }
    }
}
