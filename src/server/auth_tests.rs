use super::*;

#[test]
fn tokens_compare_whole() {
    assert!(constant_time_eq(b"s3cret", b"s3cret"));
    assert!(!constant_time_eq(b"s3cret", b"s3cres"));
    assert!(!constant_time_eq(b"s3cret", b"s3cret-and-more"));
}
