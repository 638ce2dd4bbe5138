//! Every explicit limit in the engine, in one place.
//!
//! A limit is part of the contract: a request beyond one is refused with an
//! error naming it, never truncated, never left to grow until memory runs
//! out. The HTTP layer quotes these numbers in its error messages.

/// Longest SKU name, in bytes.
pub const MAX_SKU_NAME_BYTES: usize = 64;

/// Longest customer identifier, in characters (the API says the same:
/// JSON Schema counts characters, not bytes).
pub const MAX_CUSTOMER_CHARS: usize = 63;

/// Longest customer identifier in bytes, implied by `MAX_CUSTOMER_CHARS`
/// (at most 4 bytes a character): what the journal's one-byte length holds.
pub const MAX_CUSTOMER_BYTES: usize = 4 * MAX_CUSTOMER_CHARS;

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// Most lines in one cart. Also the width of a hold's limit mask (`u32`).
pub const MAX_LINES_PER_CART: usize = 32;

/// Most units of one SKU in one line.
pub const MAX_LINE_QUANTITY: u32 = 1_000_000;

/// Most units a SKU may ever have received (sum of restocks and
/// adjustments): large enough for any shop, small enough that no sum of
/// stripes, holds or sales can overflow a `u64` or an `i64` delta.
pub const MAX_STOCK_PER_SKU: u64 = 1 << 40;

/// Most SKUs in one engine (ids are `u32`; the catalogue's chunk table is
/// sized for this many).
pub const MAX_SKUS: u32 = 1 << 24;

/// Most stripes a hot SKU is spread over.
pub const MAX_STRIPES: usize = 8;

/// Longest hold time-to-live: a day.
pub const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Most times one hold's deadline may be extended (the engine's
/// `max_extensions` is at most this; the journal keeps the count in a byte).
pub const MAX_EXTENSIONS_PER_HOLD: u8 = 100;

/// Largest per-customer limit: the top bit of the lock-free word that
/// holds it marks a kit (`StockCell::gate`).
pub const MAX_PER_CUSTOMER_LIMIT: u32 = (1 << 31) - 1;

/// Most components one kit may have (a gift box is a few SKUs; a kit's
/// reservation is a cart of its components, at most `MAX_LINES_PER_CART`).
pub const MAX_KIT_COMPONENTS: usize = 16;

/// Most locations (warehouses, stores) one SKU may keep its stock at:
/// each is a cell of its own, and an order without a location reads
/// every one to choose.
pub const MAX_LOCATIONS_PER_SKU: usize = 64;

/// Times an order of a SKU kept at locations chooses again after another
/// buyer took the units it chose (each time from fresh counts).
pub const MAX_ALLOCATION_ATTEMPTS: usize = 4;

/// Longest total hold time (creation to the latest extended deadline): a
/// week, for preorders whose payment is authorised late.
pub const MAX_HOLD_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Hold shards (and customer-limit and idempotency shards): enough that two
/// CPUs rarely meet on one lock, few enough to scan on every timer tick.
pub const SHARDS: usize = 64;

/// Most expiries or prunes one shard does per timer tick, so a tick never
/// holds a shard lock for long; the rest wait for the next tick.
pub const MAX_TIMER_WORK_PER_SHARD: usize = 4096;

/// How often a checkpoint also deletes reservation rows past their
/// retention (ended ones) or the refund window (confirmed ones). The SQLite
/// store has no index over reservations by time (it would cost every
/// purchase a second B-tree insert), so the delete scans the table: hourly,
/// and at a clean close. Rows stay in the store up to this much longer than
/// in the engine, which prunes its own records on time.
pub const RESERVATION_PRUNE_INTERVAL_MS: u64 = 60 * 60 * 1000;

/// Customers whose reservation rate (the server's optional per-customer
/// limit) is tracked at once. A customer's bucket is kept only while it is
/// not yet full again (at most a burst's worth of time after its last
/// request), so this bounds customers active within that window, not
/// customers overall; past it, new customers are refused (429) rather than
/// let through unlimited.
pub const MAX_RATE_LIMITED_CUSTOMERS: usize = 1 << 20;

/// Change-feed events kept in memory after the store has them, for readers
/// near the head (older ones are read from the store's `events` table).
/// About 200 bytes each: 13 MiB. Events not yet in the store are kept until
/// a checkpoint writes them, like the shadow's reservation rows.
pub const FEED_EVENTS_IN_MEMORY: usize = 1 << 16;

/// Most events one feed request returns (looked at, with a filter).
pub const MAX_FEED_PAGE: usize = 1_000;

/// Longest a long-poll of the feed waits.
pub const MAX_FEED_WAIT_MS: u64 = 30_000;

/// Event streams (`GET /v1/events/stream`) open at once; beyond it, 503
/// `overloaded`. Each buffers at most `FEED_STREAM_BUFFER` pages for a slow
/// client: 4 pages of up to `MAX_FEED_PAGE` events of about 450 bytes,
/// under 2 MiB per stream, under 512 MiB for all.
pub const MAX_FEED_STREAMS: usize = 256;

/// Pages a stream may have written that its client has not yet read.
pub const FEED_STREAM_BUFFER: usize = 4;

/// How many reservations one hold of a SKU's lock gives restocked units to
/// (`cell/backorder.rs`): each fill is a journal event, and an engine
/// critical section appends at most 64 (the room `Journal::make_room`
/// keeps free before a lock is taken). A restock owing more goes on in
/// further lock holds.
pub const FILLS_PER_LOCK: usize = 48;

/// Latest time (ms since the epoch) a setting may name: stores keep times
/// as signed 64-bit numbers.
pub const MAX_TIME_MS: u64 = i64::MAX as u64;

/// Longest lease id (`node:sku:sequence`, made by the node that asked for
/// the lease; the escrow's idempotency key for it).
pub const MAX_LEASE_ID_BYTES: usize = 128;

/// Most leases a node keeps open at once, over all SKUs: each is a row of
/// the engine's lease book and of the escrow. A node past it asks for no
/// more until it gives some back (`durable/lease_keeper.rs` asks for at
/// most a few per SKU at a time).
pub const MAX_OPEN_LEASES: usize = 1 << 16;

/// Most leases one SKU keeps open on one node: a return closes them
/// oldest first, one journal event each, under the SKU's cell lock
/// (within the room `Journal::make_room` keeps free, like
/// `FILLS_PER_LOCK`).
pub const MAX_OPEN_LEASES_PER_SKU: usize = 48;

/// Most buyers one waiting room keeps a place for (waiting, admitted, or
/// done: a room forgets nobody until it is turned off and on). Each place
/// holds its customer's name twice (the ticket and the map by customer)
/// and a ticket of a few words; the memory of a full room is not
/// measured. Past it a join is refused (`queue_full`).
pub const MAX_QUEUE_PER_ROOM: usize = 200_000;

/// Most SKUs with a waiting room at once: together with
/// `MAX_QUEUE_PER_ROOM`, what the rooms may take of memory.
pub const MAX_WAITING_ROOMS: usize = 16;

/// Most buyers a waiting room admits per second (`admit_per_s`).
pub const MAX_ADMIT_PER_S: u32 = 100_000;

/// Largest overbook factor, in thousandths (admitted buyers per unheld
/// unit: 10 admits ten buyers for each unit still free).
pub const MAX_OVERBOOK_MILLI: u32 = 10_000;

/// Shortest and longest time an admission stays good for.
pub const MIN_ADMISSION_TTL_MS: u64 = 1_000;
pub const MAX_ADMISSION_TTL_MS: u64 = 10 * 60 * 1000;

/// Longest wait a waiting room asks of a buyer between two polls; also
/// how long after a room opens (or the server restarts) its first
/// joiners are gathered to be shuffled (every buyer polls in that time).
pub const MAX_POLL_AFTER_MS: u64 = 5_000;
