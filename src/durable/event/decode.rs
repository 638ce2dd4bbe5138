//! Decoding: one arm per event kind, the reader every decoder shares.

use super::*;

fn decode_waiting_room(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
    let sku = SkuId::from_index(r.u32()?);
    let version = r.u64()?;
    let room = match r.u8()? {
        0 => None,
        1 => Some(RoomConfig {
            admit_per_s: r.u32()?,
            overbook_milli: r.u32()?,
            admission_ttl_ms: r.u64()?,
        }),
        _ => return Err(DecodeError::Invalid("waiting room flag")),
    };
    if let Some(room) = room {
        room.validate()
            .map_err(|_| DecodeError::Invalid("waiting room"))?;
    }
    Ok(Event::WaitingRoom { sku, version, room })
}

fn decode_sale_window(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
    let sku = SkuId::from_index(r.u32()?);
    let version = r.u64()?;
    let mut bound = || match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        _ => Err(DecodeError::Invalid("sale window flag")),
    };
    let window = SaleWindow {
        starts_at_ms: bound()?,
        ends_at_ms: bound()?,
    };
    window
        .validate()
        .map_err(|_| DecodeError::Invalid("sale window"))?;
    Ok(Event::SaleWindow {
        sku,
        version,
        window,
    })
}

fn decode_lease(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
    let sku = SkuId::from_index(r.u32()?);
    let version = r.u64()?;
    let lease = r
        .str(MAX_LEASE_ID_BYTES)?
        .ok_or(DecodeError::Invalid("empty lease id"))?;
    crate::core::engine::validate_lease_id(&lease).map_err(|_| DecodeError::Invalid("lease id"))?;
    let granted = r.u64()?;
    if granted == 0 || granted > MAX_STOCK_PER_SKU {
        return Err(DecodeError::Invalid("lease units"));
    }
    let step = match r.u8()? {
        0 => LeaseStep::Granted,
        1 => LeaseStep::Returning(r.u64()?),
        2 => LeaseStep::Closed(r.u64()?),
        _ => return Err(DecodeError::Invalid("lease step")),
    };
    if step.returned() > granted {
        return Err(DecodeError::Invalid("lease return past its grant"));
    }
    Ok(Event::Lease {
        sku,
        version,
        lease,
        granted,
        step,
    })
}

impl Event {
    /// Decodes one event that fills `payload` exactly.
    // Long by design: one arm per event kind, mirroring `encode_change`.
    pub fn decode(payload: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader(payload);
        let event = match r.u8()? {
            SKU_CREATED => {
                let sku = SkuId::from_index(r.u32()?);
                let name = r
                    .str(MAX_SKU_NAME_BYTES)?
                    .ok_or(DecodeError::Invalid("empty SKU name"))?;
                crate::core::catalogue::validate_catalogue_name(&name)
                    .map_err(|_| DecodeError::Invalid("SKU name"))?;
                Event::SkuCreated { sku, name }
            }
            kind @ (OPERATOR | OPERATOR_SAFETY) => {
                let sku = SkuId::from_index(r.u32()?);
                let delta = r.u64()? as i64;
                let version = r.u64()?;
                let tag = r.u8()?;
                let value = r.u32()?;
                let limit = match (tag, value) {
                    (0, 0) => LimitChange::Unchanged,
                    (1, 0) => LimitChange::Set(None),
                    (2, limit) if limit > 0 => LimitChange::Set(Some(limit)),
                    _ => return Err(DecodeError::Invalid("limit change")),
                };
                let safety_stock = match kind {
                    OPERATOR_SAFETY => Some(r.u64()?)
                        .filter(|&units| units <= MAX_STOCK_PER_SKU)
                        .map(Some)
                        .ok_or(DecodeError::Invalid("safety stock"))?,
                    _ => None,
                };
                Event::Operator {
                    sku,
                    delta,
                    version,
                    limit,
                    safety_stock,
                }
            }
            KIT_DEFINED => {
                let kit = SkuId::from_index(r.u32()?);
                let version = r.u64()?;
                let count = usize::from(r.u8()?);
                if !(1..=MAX_KIT_COMPONENTS).contains(&count) {
                    return Err(DecodeError::Invalid("kit component count"));
                }
                let mut components = Vec::with_capacity(count);
                for _ in 0..count {
                    let sku = SkuId::from_index(r.u32()?);
                    let quantity = r.u32()?;
                    if quantity == 0 || components.iter().any(|c: &Line| c.sku == sku) {
                        return Err(DecodeError::Invalid("kit component"));
                    }
                    components.push(Line { sku, quantity });
                }
                Event::KitDefined {
                    kit,
                    version,
                    components,
                }
            }
            SELL => Event::Sell {
                sku: SkuId::from_index(r.u32()?),
                units: r.u32()?,
            },
            LOW_STOCK => {
                let sku = SkuId::from_index(r.u32()?);
                let version = r.u64()?;
                let threshold = Some(r.u32()?).filter(|&t| t > 0);
                Event::LowStock {
                    sku,
                    version,
                    threshold,
                }
            }
            IDEMPOTENCY => {
                let key = r
                    .str(MAX_IDEMPOTENCY_KEY_BYTES)?
                    .ok_or(DecodeError::Invalid("empty idempotency key"))?;
                let fingerprint = r.u64()?;
                let created_ms = r.u64()?;
                let reservation = ReservationId::from_u64(r.u64()?);
                let status =
                    status_from_code(r.u8()?).ok_or(DecodeError::Invalid("hold status"))?;
                // Held or confirmed: a reservation as created; confirmed
                // or refunded: after a keyed refund of part.
                if !matches!(
                    status,
                    HoldStatus::Held | HoldStatus::Confirmed | HoldStatus::Refunded
                ) {
                    return Err(DecodeError::Invalid("idempotent outcome status"));
                }
                let expires_at_ms = r.u64()?;
                Event::Idempotency(KeyEvent {
                    key,
                    fingerprint,
                    created_ms,
                    reservation,
                    status,
                    expires_at_ms,
                })
            }
            SALE_WINDOW => decode_sale_window(&mut r)?,
            WAITING_ROOM => decode_waiting_room(&mut r)?,
            BACKORDER => {
                let sku = SkuId::from_index(r.u32()?);
                let version = r.u64()?;
                let limit = r.u64()?;
                if limit > MAX_STOCK_PER_SKU {
                    return Err(DecodeError::Invalid("backorder limit"));
                }
                let until_ms = match r.u8()? {
                    0 => None,
                    1 => Some(r.u64()?),
                    _ => return Err(DecodeError::Invalid("backorder end flag")),
                };
                Event::Backorder {
                    sku,
                    version,
                    rule: BackorderRule { limit, until_ms },
                }
            }
            LOCATION => {
                let sku = SkuId::from_index(r.u32()?);
                let version = r.u64()?;
                let priority = match r.u8()? {
                    0 => None,
                    1 => Some(r.u32()?),
                    _ => return Err(DecodeError::Invalid("location flag")),
                };
                Event::Location {
                    sku,
                    version,
                    priority,
                }
            }
            LEASE => decode_lease(&mut r)?,
            BACKORDER_FILLED => {
                let sku = SkuId::from_index(r.u32()?);
                let id = ReservationId::from_u64(r.u64()?);
                let ticket = r.u64()?;
                let units = r.u32()?;
                let owed_after = r.u32()?;
                let sold = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("fill sold flag")),
                };
                if units == 0 || ticket == 0 {
                    return Err(DecodeError::Invalid("backorder fill"));
                }
                let fill = Fill {
                    id,
                    ticket,
                    units,
                    owed_after,
                    sold,
                };
                Event::BackorderFilled { sku, fill }
            }
            kind @ (HOLD | HOLD_EXTENDED | HOLD_PARTS | HOLD_OWED) => {
                let hold = hold_ref::parse_hold(r.0, kind)?;
                r.0 = &[];
                Event::Hold(HoldEvent {
                    id: hold.id,
                    from: hold.from,
                    status: hold.status,
                    at_ms: hold.at_ms,
                    deadline_ms: hold.deadline_ms,
                    limit_mask: hold.limit_mask,
                    customer: hold.customer.map(Into::into),
                    lines: hold.lines().collect(),
                    extensions: hold.extensions,
                    changes: hold.has_changes().then(|| hold.changes().collect()),
                    owed: hold.has_owed().then(|| hold.owed().collect()),
                    ticket: hold.ticket,
                })
            }
            kind => return Err(DecodeError::UnknownKind(kind)),
        };
        match r.0.len() {
            0 => Ok(event),
            trailing => Err(DecodeError::Trailing(trailing)),
        }
    }
}

pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// A length-prefixed string, borrowed; length 0 is `None`.
    pub(super) fn str_ref(&mut self, max: usize) -> Result<Option<&'a str>, DecodeError> {
        let len = self.u8()? as usize;
        if len > max {
            return Err(DecodeError::Invalid("string too long"));
        }
        if len == 0 {
            return Ok(None);
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| DecodeError::Invalid("string is not UTF-8"))
    }

    /// A length-prefixed string, owned; length 0 is `None`.
    pub(super) fn str(&mut self, max: usize) -> Result<Option<Box<str>>, DecodeError> {
        self.str_ref(max).map(|text| text.map(Into::into))
    }
}
