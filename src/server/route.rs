//! The API's routes: one `Route` enum, which the dispatcher matches and
//! the metrics label, so the two can never disagree.

use hyper::Method;

/// Every route of the API, plus `Other` for requests that match none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Metrics,
    SkusList,
    SkuGet,
    SkuPut,
    SkuAdjust,
    KitPut,
    LocationPut,
    ReservationCreate,
    ReservationBatch,
    ReservationGet,
    ReservationConfirm,
    ReservationCancel,
    ReservationRefund,
    ReservationExtend,
    EventsList,
    EventsStream,
    Cluster,
    QueueJoin,
    QueuePoll,
    Ui,
    Other,
}

impl Route {
    /// In label order (the metrics' rows).
    pub const ALL: [Route; 22] = [
        Route::Healthz,
        Route::Metrics,
        Route::SkusList,
        Route::SkuGet,
        Route::SkuPut,
        Route::SkuAdjust,
        Route::KitPut,
        Route::LocationPut,
        Route::ReservationCreate,
        Route::ReservationBatch,
        Route::ReservationGet,
        Route::ReservationConfirm,
        Route::ReservationCancel,
        Route::ReservationRefund,
        Route::ReservationExtend,
        Route::EventsList,
        Route::EventsStream,
        Route::Cluster,
        Route::QueueJoin,
        Route::QueuePoll,
        Route::Ui,
        Route::Other,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Metrics => "metrics",
            Route::SkusList => "skus_list",
            Route::SkuGet => "sku_get",
            Route::SkuPut => "sku_put",
            Route::SkuAdjust => "sku_adjust",
            Route::KitPut => "kit_put",
            Route::LocationPut => "location_put",
            Route::ReservationCreate => "reservation_create",
            Route::ReservationBatch => "reservation_batch",
            Route::ReservationGet => "reservation_get",
            Route::ReservationConfirm => "reservation_confirm",
            Route::ReservationCancel => "reservation_cancel",
            Route::ReservationRefund => "reservation_refund",
            Route::ReservationExtend => "reservation_extend",
            Route::EventsList => "events_list",
            Route::EventsStream => "events_stream",
            Route::Cluster => "cluster",
            Route::QueueJoin => "queue_join",
            Route::QueuePoll => "queue_poll",
            Route::Ui => "ui",
            Route::Other => "other",
        }
    }

    /// The position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A request matched to its route; `param` is the path's first variable
/// segment (a SKU name or a reservation id), empty where there is none;
/// `location` the second (a location's name, or a queue token), empty
/// where there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched<'a> {
    pub route: Route,
    pub param: &'a str,
    pub location: &'a str,
}

/// Why a request matched no route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path exists, the method does not; `allow` is the `Allow` header.
    MethodNotAllowed {
        allow: &'static str,
    },
}

/// The route a request is counted under, and where it goes. A method the
/// path does not take is counted under the path's first route.
pub fn resolve<'a>(method: &Method, path: &'a str) -> (Route, Result<Matched<'a>, Miss>) {
    // A sale's route first: the match below compares segment by segment
    // (~220 instructions per request in callgrind); with this test first
    // `resolve` costs ~40.
    if *method == Method::POST && path == "/v1/reservations" {
        let route = Route::ReservationCreate;
        let matched = Matched {
            route,
            param: "",
            location: "",
        };
        return (route, Ok(matched));
    }
    if let Some(matched) = reservation_action(method, path) {
        return (matched.route, Ok(matched));
    }
    resolve_by_segments(method, path)
}

/// `POST /v1/reservations/{id}/confirm|cancel|refund|extend` (every
/// hold's second request) without the segment match: ~490 instructions a
/// confirm to route it by segments, ~210 this way (~70 of its own, the
/// rest `split_once`'s search; `FLOW=hold-confirm benches/http/callgrind.sh`).
/// `None` for anything else, which the segments then resolve exactly as
/// before.
fn reservation_action<'a>(method: &Method, path: &'a str) -> Option<Matched<'a>> {
    if *method != Method::POST {
        return None;
    }
    let (id, action) = path.strip_prefix("/v1/reservations/")?.split_once('/')?;
    let route = match action {
        "confirm" => Route::ReservationConfirm,
        "cancel" => Route::ReservationCancel,
        "refund" => Route::ReservationRefund,
        "extend" => Route::ReservationExtend,
        _ => return None,
    };
    Some(Matched {
        route,
        param: id,
        location: "",
    })
}

fn resolve_by_segments<'a>(method: &Method, path: &'a str) -> (Route, Result<Matched<'a>, Miss>) {
    let Some((segments, count)) = split_path(path) else {
        return (Route::Other, Err(Miss::NotFound));
    };
    let mut location = "";
    // Each path shape with the methods it takes, in `Allow` order.
    let (param, shape): (&str, &[(Method, Route)]) = match &segments[..count] {
        ["healthz"] => ("", &[(Method::GET, Route::Healthz)]),
        ["metrics"] => ("", &[(Method::GET, Route::Metrics)]),
        ["v1", "skus"] => ("", &[(Method::GET, Route::SkusList)]),
        ["v1", "skus", sku] => (
            sku,
            &[(Method::GET, Route::SkuGet), (Method::PUT, Route::SkuPut)],
        ),
        ["v1", "skus", sku, "adjust"] => (sku, &[(Method::POST, Route::SkuAdjust)]),
        ["v1", "kits", kit] => (kit, &[(Method::PUT, Route::KitPut)]),
        ["v1", "skus", sku, "locations", named] => {
            location = named;
            (sku, &[(Method::PUT, Route::LocationPut)])
        }
        ["v1", "reservations"] => ("", &[(Method::POST, Route::ReservationCreate)]),
        ["v1", "reservations", "batch"] => ("", &[(Method::POST, Route::ReservationBatch)]),
        ["v1", "reservations", id] => (id, &[(Method::GET, Route::ReservationGet)]),
        ["v1", "reservations", id, "confirm"] => (id, &[(Method::POST, Route::ReservationConfirm)]),
        ["v1", "reservations", id, "cancel"] => (id, &[(Method::POST, Route::ReservationCancel)]),
        ["v1", "reservations", id, "refund"] => (id, &[(Method::POST, Route::ReservationRefund)]),
        ["v1", "reservations", id, "extend"] => (id, &[(Method::POST, Route::ReservationExtend)]),
        ["v1", "events"] => ("", &[(Method::GET, Route::EventsList)]),
        ["v1", "events", "stream"] => ("", &[(Method::GET, Route::EventsStream)]),
        ["v1", "cluster"] => ("", &[(Method::GET, Route::Cluster)]),
        ["v1", "queue", sku] => (sku, &[(Method::POST, Route::QueueJoin)]),
        ["ui"] => ("", &[(Method::GET, Route::Ui)]),
        ["ui", asset] => (asset, &[(Method::GET, Route::Ui)]),
        ["v1", "queue", sku, token] => {
            location = token;
            (sku, &[(Method::GET, Route::QueuePoll)])
        }
        _ => return (Route::Other, Err(Miss::NotFound)),
    };
    match shape.iter().find(|(m, _)| m == method) {
        Some(&(_, route)) => (
            route,
            Ok(Matched {
                route,
                param,
                location,
            }),
        ),
        None => {
            let allow = if shape.len() == 2 {
                "GET, PUT"
            } else {
                shape[0].0.as_str()
            };
            (shape[0].1, Err(Miss::MethodNotAllowed { allow }))
        }
    }
}

/// A path segment with its percent-escapes decoded (`a%3Ab` is `a:b`);
/// borrowed when it has none. `None` for a malformed escape or bytes that
/// are not UTF-8.
///
/// Inline for its common case (every request has a segment, usually
/// without escapes, often empty); the decoding itself is out of line.
#[inline]
pub fn decode_segment(segment: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !segment.as_bytes().contains(&b'%') {
        return Some(std::borrow::Cow::Borrowed(segment));
    }
    decode_escapes(segment).map(std::borrow::Cow::Owned)
}

#[inline(never)]
fn decode_escapes(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes.get(at + 1..at + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Most segments any route has.
const MAX_SEGMENTS: usize = 5;

/// The path's segments without allocating; `None` past `MAX_SEGMENTS`
/// (no route is that deep).
fn split_path(path: &str) -> Option<([&str; MAX_SEGMENTS], usize)> {
    let mut segments = [""; MAX_SEGMENTS];
    let leading = path.bytes().take_while(|&b| b == b'/').count();
    // By bytes: `/` is ASCII, so every cut is at a character boundary.
    let mut rest = &path[leading..];
    for (count, segment) in segments.iter_mut().enumerate() {
        match rest.bytes().position(|b| b == b'/') {
            Some(at) => {
                *segment = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *segment = rest;
                return Some((segments, count + 1));
            }
        }
    }
    // MAX_SEGMENTS segments and a slash after the last: one too many.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_without_allocating_up_to_the_deepest_route() {
        let (segments, count) = split_path("/v1/reservations/00ff/confirm").unwrap();
        assert_eq!(
            &segments[..count],
            ["v1", "reservations", "00ff", "confirm"]
        );
        assert_eq!(split_path("/a/b/c/d/e").map(|(_, n)| n), Some(5));
        assert!(split_path("/a/b/c/d/e/f").is_none());
        assert_eq!(
            split_path("//healthz").map(|(s, n)| s[..n].to_vec()),
            Some(vec!["healthz"])
        );
    }

    #[test]
    fn every_route_is_reached_and_labelled_by_its_position() {
        for (index, route) in Route::ALL.iter().enumerate() {
            assert_eq!(route.index(), index);
        }
        let cases = [
            (Method::GET, "/healthz", Route::Healthz),
            (Method::GET, "/metrics", Route::Metrics),
            (Method::GET, "/v1/skus", Route::SkusList),
            (Method::GET, "/v1/skus/tee", Route::SkuGet),
            (Method::PUT, "/v1/skus/tee", Route::SkuPut),
            (Method::POST, "/v1/skus/tee/adjust", Route::SkuAdjust),
            (Method::POST, "/v1/reservations", Route::ReservationCreate),
            (Method::GET, "/v1/reservations/01", Route::ReservationGet),
            (
                Method::POST,
                "/v1/reservations/01/confirm",
                Route::ReservationConfirm,
            ),
            (
                Method::POST,
                "/v1/reservations/01/cancel",
                Route::ReservationCancel,
            ),
            (
                Method::POST,
                "/v1/reservations/01/refund",
                Route::ReservationRefund,
            ),
            (
                Method::POST,
                "/v1/reservations/01/extend",
                Route::ReservationExtend,
            ),
            (Method::GET, "/v1/events", Route::EventsList),
            (Method::GET, "/v1/events/stream", Route::EventsStream),
        ];
        for (method, path, route) in cases {
            let (label, matched) = resolve(&method, path);
            assert_eq!(
                (label, matched.map(|m| m.route)),
                (route, Ok(route)),
                "{path}"
            );
        }
        assert_eq!(
            resolve(&Method::GET, "/nowhere"),
            (Route::Other, Err(Miss::NotFound))
        );
    }

    #[test]
    fn the_sale_route_resolves_as_the_segments_do() {
        for method in [Method::POST, Method::GET, Method::PUT] {
            for path in ["/v1/reservations", "//v1/reservations", "/v1/reservations/"] {
                assert_eq!(
                    resolve(&method, path),
                    resolve_by_segments(&method, path),
                    "{method} {path}"
                );
            }
        }
    }

    proptest::proptest! {
        /// The reservation actions' shortcut never routes a path another
        /// way than the segments do (it may only decline).
        #[test]
        fn reservation_actions_resolve_as_the_segments_do(
            lead in "/|//|",
            id in "|0f|0f%7E|batch|a/b",
            action in "|/|/confirm|/cancel|/refund|/extend|/confirm/|/confirmx|/skus",
            method in 0..3usize,
        ) {
            let method = [Method::POST, Method::GET, Method::PUT][method].clone();
            let path = format!("{lead}v1/reservations/{id}{action}");
            proptest::prop_assert_eq!(
                resolve(&method, &path),
                resolve_by_segments(&method, &path),
                "{} {}", method, path
            );
        }
    }

    #[test]
    fn escaped_segments_decode_and_bad_escapes_are_refused() {
        assert_eq!(decode_segment("tee").as_deref(), Some("tee"));
        assert_eq!(decode_segment("a%3Ab").as_deref(), Some("a:b"));
        assert_eq!(decode_segment("%7e%7E").as_deref(), Some("~~"));
        for bad in ["%", "%3", "%zz", "%ff", "a%3"] {
            assert_eq!(decode_segment(bad), None, "{bad}");
        }
    }

    /// RFC 9110 15.5.6: a 405 names the methods the resource takes.
    #[test]
    fn a_wrong_method_names_the_allowed_ones() {
        let allow = |method: Method, path: &str| match resolve(&method, path).1 {
            Err(Miss::MethodNotAllowed { allow }) => allow,
            other => panic!("{method} {path}: {other:?}"),
        };
        assert_eq!(allow(Method::DELETE, "/v1/skus/tee"), "GET, PUT");
        assert_eq!(allow(Method::GET, "/v1/reservations"), "POST");
        assert_eq!(allow(Method::POST, "/healthz"), "GET");
        assert_eq!(allow(Method::GET, "/v1/reservations/01/cancel"), "POST");
    }
}
