use proptest::prelude::*;

struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::message::write_quoted(f, self.0)
    }
}

proptest! {
    /// The one-piece quoting writes what `Debug` writes, for SKU
    /// names and for any text at all.
    #[test]
    fn quoting_a_name_writes_what_debug_writes(
        name in prop_oneof!["[A-Za-z0-9._~:-]{1,40}", ".{0,24}", "[ -~]{0,24}"],
    ) {
        prop_assert_eq!(Quoted(&name).to_string(), format!("{name:?}"));
    }
}
