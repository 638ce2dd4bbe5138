//! SKU routes: list, read, and the operator's put and adjust.

use hyper::body::Incoming;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::api::{Api, MAX_PAGE};
use super::body::{read_json, Fields};
use std::sync::Arc;

use super::cluster::{Cluster, EscrowRefusal, OwnFigures};
use super::error::{json_response, ApiError, Code, HttpResponse};
use super::response::sku_json;
use crate::core::cell::BackorderRule;
use crate::core::engine::SaleWindow;
use crate::core::engine::{LocationPut, SkuDocument, SkuPut, StockLevel};
use crate::core::limits::{MAX_KIT_COMPONENTS, MAX_LINE_QUANTITY, MAX_STOCK_PER_SKU};
use crate::core::types::{Line, SkuId};

impl Api {
    pub(super) fn sku_id(&self, name: &str) -> Result<SkuId, ApiError> {
        self.engine.sku(name).map_err(|e| self.engine_error(e))
    }

    pub(super) fn sku_json(&self, document: &SkuDocument) -> Value {
        sku_json(document, |id| self.engine.sku_name(id))
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
        let skus: Vec<Value> = page.iter().map(|d| self.sku_json(d)).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({"skus": skus, "next_after": next}),
        ))
    }

    /// `GET /v1/skus/{sku}`
    pub(super) fn get_sku(&self, name: &str) -> Result<HttpResponse, ApiError> {
        let id = self.sku_id(name)?;
        let document = self.document(id)?;
        let mut json = self.sku_json(&document);
        if let (Some(cluster), Some(fields)) = (&self.cluster, json.as_object_mut()) {
            let own = OwnFigures {
                leased: self.engine.leased(id),
                available: document.available,
                held: document.held,
                sold: document.sold,
            };
            fields.insert("cluster".into(), cluster.sku_view(name, own));
        }
        Ok(json_response(StatusCode::OK, &json))
    }

    /// `PUT /v1/skus/{sku}` (operator): create or set stock, with an
    /// optional safety stock, per-customer limit, low-stock threshold and
    /// expected version. The stock is given as `available` (units for
    /// sale) or `on_hand` (units there, of which `safety_stock` is kept
    /// back). The threshold is a second operator change (its own version),
    /// made only once the first succeeded.
    pub(super) async fn put_sku(
        &self,
        sku: &str,
        body: Incoming,
    ) -> Result<HttpResponse, ApiError> {
        let body = PutSkuBody::read(read_json(body).await?)?;
        if let Some(cluster) = &self.cluster {
            return put_sku_in_cluster(Arc::clone(cluster), sku, body).await;
        }
        let id = self.apply_sku_put(sku, body)?;
        self.acknowledge().await?;
        Ok(json_response(
            StatusCode::OK,
            &self.sku_json(&self.document(id)?),
        ))
    }

    /// A put's changes, each its own versioned operator change: the stock
    /// (which creates the SKU and checks the expected version) unless only
    /// rules change on a SKU that exists, then the backorder rule, the
    /// low-stock threshold, the sale window and the waiting room. The
    /// window is checked first, so a refused one changes nothing.
    fn apply_sku_put(&self, sku: &str, body: PutSkuBody) -> Result<SkuId, ApiError> {
        let PutSkuBody {
            put,
            low_stock,
            backorder,
            window: window_fields,
            room,
        } = body;
        let changes_stock = put.level.is_some() || put.safety_stock.is_some();
        let changes_rule = backorder != (None, None);
        let changes_window = window_fields != (None, None);
        if !changes_stock && !changes_rule && !changes_window && room.is_none() {
            return Err(ApiError::invalid(
                "field \"available\", \"on_hand\", \"safety_stock\", \"backorder_limit\", \
                 \"backorder_until_ms\", \"sale_starts_at_ms\", \"sale_ends_at_ms\" or \
                 \"waiting_room\" is required",
            ));
        }
        let existing = self.engine.sku(sku).ok();
        let window = changes_window
            .then(|| self.merged_window(existing, window_fields))
            .transpose()?;
        let id = match existing {
            Some(id) if !changes_stock && put.expected_version.is_none() => id,
            _ => {
                self.engine
                    .put_stock(sku, &put)
                    .map_err(|e| self.engine_error(e))?
                    .0
            }
        };
        let refused = |e| self.engine_error(e);
        if changes_rule {
            let current = self.document(id)?;
            let rule = BackorderRule {
                limit: backorder.0.unwrap_or(current.backorder_limit),
                until_ms: backorder.1.unwrap_or(current.backorder_until_ms),
            };
            self.engine.set_backorder(id, rule).map_err(refused)?;
        }
        if let Some(threshold) = low_stock {
            self.engine.set_low_stock(id, threshold).map_err(refused)?;
        }
        if let Some(window) = window {
            self.engine.set_sale_window(id, window).map_err(refused)?;
        }
        if let Some(room) = room {
            self.engine.set_waiting_room(id, room).map_err(refused)?;
        }
        Ok(id)
    }

    /// The sale window a put asks for: each bound given (a time, or null
    /// for open-ended) replaces the current one, an absent one stays.
    /// Checked here, before anything of the put is made. A window that
    /// would end before it starts, by the request's own bounds or against
    /// the SKU's other, current one, is 409 `sale_window_conflict` naming
    /// the window it would make (409, not 400: no schema can say "after",
    /// and the same bound is fine on another SKU).
    fn merged_window(
        &self,
        existing: Option<SkuId>,
        (starts, ends): (Option<Option<u64>>, Option<Option<u64>>),
    ) -> Result<SaleWindow, ApiError> {
        let current = existing.map_or(SaleWindow::ALWAYS, |id| self.engine.sale_window(id));
        let window = SaleWindow {
            starts_at_ms: starts.unwrap_or(current.starts_at_ms),
            ends_at_ms: ends.unwrap_or(current.ends_at_ms),
        };
        if let (Some(starts), Some(ends)) = (window.starts_at_ms, window.ends_at_ms) {
            if ends <= starts {
                let message = "the sale window would end before it starts (send both bounds, \
                               or null for one to drop: an absent bound keeps the SKU's)";
                return Err(
                    ApiError::new(StatusCode::CONFLICT, Code::SaleWindowConflict, message)
                        .with("sale_starts_at_ms", starts)
                        .with("sale_ends_at_ms", ends),
                );
            }
        }
        window.validate().map_err(|e| self.engine_error(e))?;
        Ok(window)
    }

    /// `PUT /v1/kits/{kit}` (operator): defines a kit by its components,
    /// `{"components": [{"sku", "quantity"}]}`; answers the kit's SKU
    /// document.
    pub(super) async fn put_kit(
        &self,
        kit: &str,
        body: Incoming,
    ) -> Result<HttpResponse, ApiError> {
        if self.cluster.is_some() {
            return Err(cluster_refused(
                "kits are not built for a cluster: a kit defined on one node would be unknown \
                 to the others",
            ));
        }
        let mut fields = Fields::new(read_json(body).await?, &["components"])?;
        let listed = fields
            .take("components")
            .ok_or_else(|| ApiError::invalid("field \"components\" is required"))?;
        let components = self.component_lines(&listed)?;
        let (id, _) = self
            .engine
            .define_kit(kit, &components)
            .map_err(|e| self.engine_error(e))?;
        self.acknowledge().await?;
        Ok(json_response(
            StatusCode::OK,
            &self.sku_json(&self.document(id)?),
        ))
    }

    /// `PUT /v1/skus/{sku}/locations/{location}` (operator): creates the
    /// SKU kept at locations and the location if absent, and sets the
    /// location's stock (`available` or `on_hand`, `safety_stock`) and
    /// allocation `priority`; answers the SKU's document.
    pub(super) async fn put_location(
        &self,
        sku: &str,
        location: &str,
        body: Incoming,
    ) -> Result<HttpResponse, ApiError> {
        if self.cluster.is_some() {
            return Err(cluster_refused(
                "locations are not built for a cluster: a location's stock would be one \
                 node's, not the escrow's",
            ));
        }
        let mut fields = Fields::new(
            read_json(body).await?,
            &[
                "available",
                "on_hand",
                "safety_stock",
                "priority",
                "expected_version",
            ],
        )?;
        let level = stock_level(&mut fields)?;
        let stock = SkuPut {
            level,
            safety_stock: fields.u64("safety_stock")?,
            limit: None,
            expected_version: fields.u64("expected_version")?,
        };
        let priority = match fields.u64("priority")? {
            None => None,
            Some(p) => Some(u32::try_from(p).map_err(|_| {
                ApiError::invalid(format!("priority must be at most {}", u32::MAX))
            })?),
        };
        if stock.level.is_none() && stock.safety_stock.is_none() && priority.is_none() {
            return Err(ApiError::invalid(
                "field \"available\", \"on_hand\", \"safety_stock\" or \"priority\" is required",
            ));
        }
        let put = LocationPut { stock, priority };
        let change = self
            .engine
            .put_location(sku, location, &put)
            .map_err(|e| self.engine_error(e))?;
        self.acknowledge().await?;
        Ok(json_response(
            StatusCode::OK,
            &self.sku_json(&self.document(change.sku)?),
        ))
    }

    /// `[{"sku": name, "quantity": n}, ...]` as lines of known SKUs.
    fn component_lines(&self, listed: &Value) -> Result<Vec<Line>, ApiError> {
        let malformed = || {
            ApiError::invalid(format!(
                "\"components\" must be a list of 1 to {MAX_KIT_COMPONENTS} objects \
                 {{\"sku\": name, \"quantity\": units from 1 to {MAX_LINE_QUANTITY}}}"
            ))
        };
        let items = listed.as_array().ok_or_else(malformed)?;
        if items.is_empty() || items.len() > MAX_KIT_COMPONENTS {
            return Err(malformed());
        }
        items
            .iter()
            .map(|item| {
                let item = item
                    .as_object()
                    .filter(|o| o.len() == 2)
                    .ok_or_else(malformed)?;
                let name = item
                    .get("sku")
                    .and_then(Value::as_str)
                    .ok_or_else(malformed)?;
                let quantity = (item.get("quantity").and_then(Value::as_u64))
                    .filter(|q| (1..=u64::from(MAX_LINE_QUANTITY)).contains(q))
                    .ok_or_else(malformed)?;
                Ok(Line {
                    sku: self.sku_id(name)?,
                    quantity: quantity as u32,
                })
            })
            .collect()
    }

    /// `POST /v1/skus/{sku}/adjust` (operator): add or remove units. In a
    /// cluster an `Idempotency-Key` makes a receive happen at most once.
    pub(super) async fn adjust(
        &self,
        sku: &str,
        headers: &hyper::HeaderMap,
        body: Incoming,
    ) -> Result<HttpResponse, ApiError> {
        let key = (headers.get("idempotency-key"))
            .map(|v| v.to_str().map(str::to_owned))
            .transpose()
            .map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII"))?;
        let mut fields = Fields::new(read_json(body).await?, &["delta"])?;
        let delta = fields
            .i64("delta")?
            .ok_or_else(|| ApiError::invalid("field \"delta\" is required"))?;
        if let Some(cluster) = &self.cluster {
            return change_in_escrow(Arc::clone(cluster), sku, delta, key).await;
        }
        if key.is_some() {
            return Err(ApiError::invalid(
                "an adjust takes an Idempotency-Key only on a node of a cluster (where it is \
                 a receive in the escrow); a node that runs alone would not honour it",
            ));
        }
        let id = self.sku_id(sku)?;
        self.engine
            .adjust(id, delta)
            .map_err(|e| self.engine_error(e))?;
        self.acknowledge().await?;
        Ok(json_response(
            StatusCode::OK,
            &self.sku_json(&self.document(id)?),
        ))
    }
}

/// An operator's change of `sku`'s units in the escrow (a blocking
/// database statement, so off the runtime's workers). A receive answers
/// 202, since the units reach the nodes' counters as their keepers lease
/// them; a withdrawal 200, since the units are gone from the stock of
/// record at once (only unleased ones: the nodes' are their buyers').
async fn change_in_escrow(
    cluster: Arc<dyn Cluster>,
    sku: &str,
    delta: i64,
    key: Option<String>,
) -> Result<HttpResponse, ApiError> {
    crate::core::catalogue::validate_sku_name(sku).map_err(|e| ApiError::invalid(e.to_string()))?;
    if delta == 0 || delta.unsigned_abs() > MAX_STOCK_PER_SKU {
        return Err(ApiError::invalid(format!(
            "delta must be from 1 to {MAX_STOCK_PER_SKU} units (or from -1 to \
             -{MAX_STOCK_PER_SKU}) in a cluster"
        )));
    }
    let name = sku.to_owned();
    let changed = tokio::task::spawn_blocking(move || cluster.change(&name, delta, key.as_deref()))
        .await
        .map_err(|_| escrow_failed("its change stopped unexpectedly"))?;
    let now = changed.map_err(|refusal| match refusal {
        EscrowRefusal::KeyReused(why) => {
            ApiError::new(StatusCode::CONFLICT, Code::IdempotencyKeyReused, why)
        }
        EscrowRefusal::TooFewUnleased {
            why,
            unleased,
            requested,
        } => ApiError::new(StatusCode::CONFLICT, Code::InsufficientStock, why)
            .with("sku", sku)
            .with("available", unleased)
            .with("requested", requested),
        EscrowRefusal::UnknownSku(why) => {
            ApiError::new(StatusCode::NOT_FOUND, Code::UnknownSku, why).with("sku", sku)
        }
        EscrowRefusal::Failed(why) => escrow_failed(&format!("it did not take the change: {why}")),
    })?;
    let units = delta.unsigned_abs();
    let (status, body) = match delta > 0 {
        true => (
            StatusCode::ACCEPTED,
            json!({"sku": sku, "received": units, "to": "escrow", "replayed": !now}),
        ),
        false => (
            StatusCode::OK,
            json!({"sku": sku, "withdrawn": units, "from": "escrow", "replayed": !now}),
        ),
    };
    Ok(json_response(status, &body))
}

/// An operator's per-customer limit for `sku`, set in the escrow for the
/// whole cluster: 202, since each node's keeper applies it at its next
/// refresh (and before it books any unit of a SKU new to it).
async fn limit_in_escrow(
    cluster: Arc<dyn Cluster>,
    sku: &str,
    limit: Option<u32>,
) -> Result<HttpResponse, ApiError> {
    crate::core::catalogue::validate_sku_name(sku).map_err(|e| ApiError::invalid(e.to_string()))?;
    if limit.is_some_and(|l| l > crate::core::limits::MAX_PER_CUSTOMER_LIMIT) {
        return Err(ApiError::invalid(format!(
            "per_customer_limit must be from 1 to {}",
            crate::core::limits::MAX_PER_CUSTOMER_LIMIT
        )));
    }
    let name = sku.to_owned();
    let set = tokio::task::spawn_blocking(move || cluster.set_limit(&name, limit))
        .await
        .map_err(|_| escrow_failed("setting the limit stopped unexpectedly"))?;
    set.map_err(|why| escrow_failed(&format!("it did not take the limit: {why}")))?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"sku": sku, "per_customer_limit": limit, "to": "escrow"}),
    ))
}

/// `PUT /v1/skus/{sku}`'s body, each field checked.
struct PutSkuBody {
    put: SkuPut,
    low_stock: Option<Option<u32>>,
    backorder: (Option<u64>, Option<Option<u64>>),
    window: (Option<Option<u64>>, Option<Option<u64>>),
    room: Option<Option<crate::core::waiting_room::RoomConfig>>,
}

impl PutSkuBody {
    fn read(body: serde_json::Map<String, Value>) -> Result<PutSkuBody, ApiError> {
        let mut fields = Fields::new(
            body,
            &[
                "available",
                "on_hand",
                "safety_stock",
                "per_customer_limit",
                "low_stock_threshold",
                "backorder_limit",
                "backorder_until_ms",
                "sale_starts_at_ms",
                "sale_ends_at_ms",
                "waiting_room",
                "expected_version",
            ],
        )?;
        let level = stock_level(&mut fields)?;
        let room = super::queue::room_field(&mut fields)?;
        let window = (
            fields.nullable_u64("sale_starts_at_ms")?,
            fields.nullable_u64("sale_ends_at_ms")?,
        );
        let put = SkuPut {
            level,
            safety_stock: fields.u64("safety_stock")?,
            limit: fields.limit("per_customer_limit")?,
            expected_version: fields.u64("expected_version")?,
        };
        Ok(PutSkuBody {
            put,
            low_stock: fields.limit("low_stock_threshold")?,
            backorder: (
                fields.u64("backorder_limit")?,
                fields.nullable_u64("backorder_until_ms")?,
            ),
            window,
            room,
        })
    }
}

/// A put on a node of a cluster: only what every node can apply from the
/// escrow is taken (the per-customer limit); a stock level, which one node
/// cannot make true for all, and a rule one node would keep alone are
/// refused.
async fn put_sku_in_cluster(
    cluster: Arc<dyn Cluster>,
    sku: &str,
    body: PutSkuBody,
) -> Result<HttpResponse, ApiError> {
    if body.put.level.is_some() {
        return Err(cluster_refused(
            "in a cluster the stock is the escrow's: change it with POST \
             /v1/skus/{sku}/adjust and a delta (any node takes it); a put of stock, which \
             one node cannot make true for all, is refused",
        ));
    }
    let per_node = body.put.safety_stock.is_some()
        || body.put.expected_version.is_some()
        || body.low_stock.is_some()
        || body.backorder != (None, None)
        || body.window != (None, None)
        || body.room.is_some();
    match (body.put.limit, per_node) {
        (Some(limit), false) => limit_in_escrow(cluster, sku, limit).await,
        (None, false) => Err(ApiError::invalid(
            "field \"per_customer_limit\" is required (in a cluster the stock is the \
             escrow's: change it with POST /v1/skus/{sku}/adjust)",
        )),
        _ => Err(cluster_refused(
            "in a cluster a SKU's rules are the escrow's, for every node: only \
             \"per_customer_limit\" (sent alone) is taken; safety stock, a low-stock \
             threshold, backorders, sale windows, waiting rooms and expected_version \
             are not built for a cluster",
        )),
    }
}

/// The escrow could not be reached or refused: nothing changed, and a
/// retry is safe once it is back (503).
fn escrow_failed(why: &str) -> ApiError {
    let message = format!("the escrow (the cluster's stock of record) failed: {why}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Code::StorageFailed,
        message,
    )
}

fn cluster_refused(message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, Code::ClusterRefused, message)
}

/// A body's `available` or `on_hand` (never both).
fn stock_level(fields: &mut Fields) -> Result<Option<StockLevel>, ApiError> {
    match (fields.u64("available")?, fields.u64("on_hand")?) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "give either \"available\" (units for sale) or \"on_hand\" (units there, \
             of which \"safety_stock\" is kept back), not both",
        )),
        (Some(units), None) => Ok(Some(StockLevel::Available(units))),
        (None, Some(units)) => Ok(Some(StockLevel::OnHand(units))),
        (None, None) => Ok(None),
    }
}
