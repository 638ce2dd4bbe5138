//! Who may call what. Today: operator routes need the admin token as a
//! bearer token when one is configured.

use hyper::{HeaderMap, StatusCode};

use super::error::{ApiError, Code};

/// Refuses an operator request without the configured bearer token.
pub fn check_operator(admin_token: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = admin_token else {
        return Ok(());
    };
    let presented = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            Code::Unauthorized,
            "operator routes need the header `Authorization: Bearer <admin token>`",
        )),
    }
}

/// Compares without an early exit, so response time does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-and-more"));
    }
}
