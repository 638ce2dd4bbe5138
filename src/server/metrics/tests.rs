use super::*;
use crate::durable::journal::{Durability, JournalConfig};

/// Bug: an error code missing from the label list was counted as `ok`,
/// and an unlisted status as 500. Codes are an enum now, each with its
/// own label, and an unlisted status is `other`.
#[test]
fn every_outcome_and_status_is_counted_under_its_own_label() {
    let dir = std::env::temp_dir().join(format!("hotstock-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let journal = Journal::start(
        JournalConfig::new(&dir, Durability::Async),
        Arc::new(crate::durable::journal::fs::RealFs),
        0,
        Box::new(|_| {}),
    )
    .unwrap();
    let requests = Arc::new(RequestCounters::new());
    for code in Code::ALL {
        requests.count(
            0,
            Route::SkuGet,
            Some(code),
            StatusCode::CONFLICT,
            Role::Anonymous,
        );
    }
    requests.count(
        1,
        Route::Healthz,
        None,
        StatusCode::IM_A_TEAPOT,
        Role::Anonymous,
    );
    let gauge = InFlightGauge(Arc::new([]));
    let text = render(&registry(
        requests,
        gauge,
        Arc::new(journal),
        DurableSources::default(),
    ));
    for code in Code::ALL {
        let line = format!(
            "hotstock_http_requests_total{{route=\"sku_get\",code=\"{}\"}} 1",
            code.as_str()
        );
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("route=\"sku_get\",code=\"ok\""), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "hotstock_http_responses_total{route=\"healthz\",status=\"other\"} 1"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
