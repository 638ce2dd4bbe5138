use super::*;

#[test]
fn tokens_compare_whole() {
    assert!(constant_time_eq(b"s3cret", b"s3cret"));
    assert!(!constant_time_eq(b"s3cret", b"s3cres"));
    assert!(!constant_time_eq(b"s3cret", b"s3cret-and-more"));
}

const KEY: &str = "unit-test-buyer-key-0123456789abcdef";

fn auth() -> Auth {
    Auth::new(&AuthConfig {
        admin_token: Some("operator".into()),
        service_tokens: vec![("checkout".into(), "service-token".into())],
        buyer_keys: vec![("k1".into(), KEY.as_bytes().to_vec())],
    })
}

fn token(sub: &str, secret: &str, exp: u64) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let claims = serde_json::json!({"sub": sub, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        hyper::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    headers
}

/// The connection's cache answers only for the very token it verified:
/// a forgery sent after a valid token on the same connection is checked,
/// not waved through.
#[test]
fn the_connection_cache_answers_only_for_the_token_it_verified() {
    let auth = auth();
    let cache = TokenCache::default();
    let exp = unix_now_s() + 3600;
    let good = token("ann", KEY, exp);
    for _ in 0..2 {
        let caller = auth.identify(&headers(&good), &cache).unwrap();
        assert_eq!(caller, Caller::Buyer("ann".into()));
    }
    // Same header and claims, signed with another key.
    let forged = token("ann", "another-key-0123456789abcdef-012345", exp);
    assert_eq!(forged.rsplit('.').nth(1), good.rsplit('.').nth(1));
    let refused = auth.identify(&headers(&forged), &cache).unwrap_err();
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let bob = token("bob", KEY, exp);
    assert_eq!(
        auth.identify(&headers(&bob), &cache).unwrap(),
        Caller::Buyer("bob".into())
    );
    // An expired token is refused even right after a valid one.
    let expired = token("bob", KEY, unix_now_s() - 3600);
    assert!(auth.identify(&headers(&expired), &cache).is_err());
}

#[test]
fn shared_secrets_name_their_role_and_others_are_refused() {
    let auth = auth();
    let cache = TokenCache::default();
    assert_eq!(
        auth.identify(&headers("operator"), &cache).unwrap(),
        Caller::Operator
    );
    assert_eq!(
        auth.identify(&headers("service-token"), &cache).unwrap(),
        Caller::Service("checkout")
    );
    assert!(auth.identify(&headers("service-tokem"), &cache).is_err());
    assert_eq!(
        auth.identify(&HeaderMap::new(), &cache).unwrap(),
        Caller::Anonymous
    );
}

fn token_with(sub: &str, claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let mut claims = claims;
    claims["sub"] = sub.into();
    let key = jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// A token that expires while its connection is open stops working there:
/// the cache checks `exp` against the same clock the first check used.
#[test]
fn a_cached_token_expires_on_its_connection() {
    let auth = auth();
    let cache = TokenCache::default();
    let t = 1_800_000_000;
    let token = token_with("ann", serde_json::json!({"exp": t + 60}));
    let at = |now| auth.identify_at(&headers(&token), &cache, now);
    assert_eq!(at(t).unwrap(), Caller::Buyer("ann".into()));
    assert_eq!(
        at(t + 60 + TOKEN_LEEWAY_S - 1).unwrap(),
        Caller::Buyer("ann".into())
    );
    let refused = at(t + 60 + TOKEN_LEEWAY_S).unwrap_err();
    assert!(refused.message.contains("expired"), "{}", refused.message);
}

#[test]
fn a_token_not_valid_yet_becomes_valid() {
    let auth = auth();
    let cache = TokenCache::default();
    let t = 1_800_000_000;
    let token = token_with("ann", serde_json::json!({"exp": t + 3600, "nbf": t + 100}));
    let refused = auth.identify_at(&headers(&token), &cache, t).unwrap_err();
    assert!(
        refused.message.contains("not valid yet"),
        "{}",
        refused.message
    );
    let later = auth.identify_at(&headers(&token), &cache, t + 100).unwrap();
    assert_eq!(later, Caller::Buyer("ann".into()));
}
