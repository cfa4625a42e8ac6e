//! HS256 tokens: `sub` = user id, `exp`, `iat`, and `ver`, the user's token
//! version when it was issued. No other algorithm is accepted.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub ver: i64,
}

/// Signing and verification keys; lives in the app state.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        let invalid = |e: jsonwebtoken::errors::Error| format!("the JWT secret is not usable: {e}");
        Ok(JwtKeys {
            encoding: EncodingKey::from_secret(secret).map_err(invalid)?,
            decoding: DecodingKey::from_secret(secret).map_err(invalid)?,
            validation,
        })
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Checks signature, algorithm and expiry. Revocation (`ver`) and the
    /// user's existence are checked against the database by the caller.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        // RFC 7519: not accepted on or after `exp` (the library still
        // accepts the second of `exp` itself).
        (claims.exp.saturating_mul(1000) > crate::db::now_ms()).then_some(claims)
    }
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<redacted>)")
    }
}
