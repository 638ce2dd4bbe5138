//! The operator's live sale page (#17), served at `/ui` by the server
//! itself: three files embedded in the binary (no CDN, no build step, no
//! network needed), plain DOM and SVG. The page holds no data of its own:
//! it asks for the operator token, keeps it in memory only, and reads the
//! change feed (`/v1/events/stream`), `/metrics` and `/v1/skus` with it,
//! like any client. `ui/app.js` says how.
//!
//! The files are served with a content security policy that allows
//! nothing but this origin (no inline script, no other host), and never
//! cached, so a page after an upgrade is the upgrade's.

use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::error::{ApiError, Code, HttpResponse};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// `GET /ui` and `GET /ui/{file}`.
pub fn asset(name: &str) -> Result<HttpResponse, ApiError> {
    let (body, kind) = match name {
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                format!("the page has no file {name:?}"),
            ))
        }
    };
    let mut response = Response::new(Full::new(bytes::Bytes::from_static(body.as_bytes())).into());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_and_nothing_else() {
        for (name, kind) in [
            ("", "text/html; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
        ] {
            let response = asset(name).unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[CONTENT_TYPE], kind);
            assert!(response.headers().contains_key("content-security-policy"));
        }
        assert_eq!(
            asset("../Cargo.toml").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        // The page loads its script and style from this origin only.
        assert!(INDEX.contains("src=\"/ui/app.js\"") && INDEX.contains("href=\"/ui/app.css\""));
        assert!(
            !INDEX.contains("<script>")
                && !INDEX.contains("http://")
                && !INDEX.contains("https://")
        );
    }
}
