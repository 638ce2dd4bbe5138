use super::timers::next_generation;
use super::*;

/// The 256 MiB budget for 1M SKUs and 1M open holds (docs/benchmarks.md)
/// rests on these sizes: a one-line hold stores its line inline.
#[test]
fn record_layout_stays_within_the_memory_budget() {
    assert_eq!(std::mem::size_of::<Lines>(), 16);
    assert!(
        std::mem::size_of::<Slot>() <= 56,
        "{}",
        std::mem::size_of::<Slot>()
    );
    assert!(std::mem::size_of::<crate::core::catalogue::SkuSlot>() <= 96);
}

#[test]
fn a_reused_slot_moves_into_this_boots_generations_and_wraps_inside_them() {
    let floor = 7 << 16;
    // A record restored from an earlier boot: its slot's next id is the
    // first of this boot's.
    assert_eq!(next_generation(3 << 16 | 41, floor), floor);
    assert_eq!(next_generation(floor, floor), floor + 1);
    // The boot's last generation wraps to its first, never into the
    // next boot's.
    assert_eq!(next_generation(floor | 0xFFFF, floor), floor);
    // An engine that never booted from a store (floor 0) wraps likewise.
    assert_eq!(next_generation(0xFFFF, 0), 0);
}

#[test]
fn ids_round_trip_through_text_and_parts() {
    let id = ReservationId::new(7, 5, 1234);
    assert_eq!((id.generation(), id.shard(), id.slot()), (7, 5, 1234));
    assert_eq!(id.to_string().parse::<ReservationId>().unwrap(), id);
    assert_eq!(id.to_string().len(), 16);
}
