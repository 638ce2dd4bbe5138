//! SKU routes: list, read, and the operator's put and adjust.

use hyper::body::Incoming;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::api::{Api, MAX_PAGE};
use super::body::{read_json, Fields};
use super::error::{json_response, ApiError, HttpResponse};
use super::response::sku_json;
use crate::core::engine::SkuDocument;
use crate::core::types::SkuId;

impl Api {
    pub(super) fn sku_id(&self, name: &str) -> Result<SkuId, ApiError> {
        self.engine.sku(name).map_err(|e| self.engine_error(e))
    }

    fn document(&self, id: SkuId) -> Result<SkuDocument, ApiError> {
        self.engine
            .sku_document(id)
            .map_err(|e| self.engine_error(e))
    }

    /// `GET /v1/skus?after=NAME&limit=N`
    pub(super) fn list_skus(&self, query: Option<&str>) -> Result<HttpResponse, ApiError> {
        let mut after = None;
        let mut limit = 100usize;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "after" => after = Some(self.sku_id(value)?),
                "limit" => {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(format!(
                                "limit must be a whole number from 1 to {MAX_PAGE}"
                            ))
                        })?;
                }
                other => {
                    return Err(ApiError::invalid(format!(
                        "unknown query parameter {other:?}"
                    )))
                }
            }
        }
        let page = self.engine.skus_after(after, limit);
        let next = (page.len() == limit)
            .then(|| page.last().map(|d| d.name.to_string()))
            .flatten();
        let skus: Vec<Value> = page.iter().map(sku_json).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({"skus": skus, "next_after": next}),
        ))
    }

    /// `GET /v1/skus/{sku}`
    pub(super) fn get_sku(&self, name: &str) -> Result<HttpResponse, ApiError> {
        let id = self.sku_id(name)?;
        Ok(json_response(
            StatusCode::OK,
            &sku_json(&self.document(id)?),
        ))
    }

    /// `PUT /v1/skus/{sku}` (operator): create or set stock, with an
    /// optional per-customer limit, low-stock threshold and expected
    /// version. The threshold is a second operator change (its own
    /// version), made only once the first succeeded.
    pub(super) async fn put_sku(
        &self,
        sku: &str,
        body: Incoming,
    ) -> Result<HttpResponse, ApiError> {
        let mut fields = Fields::new(
            read_json(body).await?,
            &[
                "available",
                "per_customer_limit",
                "low_stock_threshold",
                "expected_version",
            ],
        )?;
        let available = fields
            .u64("available")?
            .ok_or_else(|| ApiError::invalid("field \"available\" is required"))?;
        let limit = fields.limit("per_customer_limit")?;
        let low_stock = fields.limit("low_stock_threshold")?;
        let expected = fields.u64("expected_version")?;
        let (id, _) = self
            .engine
            .put_sku(sku, available, limit, expected)
            .map_err(|e| self.engine_error(e))?;
        if let Some(threshold) = low_stock {
            self.engine
                .set_low_stock(id, threshold)
                .map_err(|e| self.engine_error(e))?;
        }
        self.acknowledge().await?;
        Ok(json_response(
            StatusCode::OK,
            &sku_json(&self.document(id)?),
        ))
    }

    /// `POST /v1/skus/{sku}/adjust` (operator): add or remove units.
    pub(super) async fn adjust(&self, sku: &str, body: Incoming) -> Result<HttpResponse, ApiError> {
        let mut fields = Fields::new(read_json(body).await?, &["delta"])?;
        let delta = fields
            .i64("delta")?
            .ok_or_else(|| ApiError::invalid("field \"delta\" is required"))?;
        let id = self.sku_id(sku)?;
        self.engine
            .adjust(id, delta)
            .map_err(|e| self.engine_error(e))?;
        self.acknowledge().await?;
        Ok(json_response(
            StatusCode::OK,
            &sku_json(&self.document(id)?),
        ))
    }
}
