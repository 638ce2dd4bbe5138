//! The `hotstock` binary, run as a user would.

use std::process::Command;

fn hotstock(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hotstock"))
        .args(args)
        .output()
        .expect("run hotstock")
}

#[test]
fn flash_sale_sells_exactly_the_stock_and_says_so() {
    let out = hotstock(&["flash-sale", "--stock", "5000", "--buyers", "8"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("units sold          5000\n"), "{stdout}");
    assert!(stdout.contains("oversold            0\n"), "{stdout}");
    assert!(stdout.contains("invariants          hold"), "{stdout}");
}

#[test]
fn flash_sale_with_a_limit_sells_one_per_customer() {
    let out = hotstock(&[
        "flash-sale",
        "--stock",
        "100",
        "--buyers",
        "10",
        "--limit-per-customer",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("units sold          10\n"), "{stdout}");
    assert!(stdout.contains("left unsold         90\n"), "{stdout}");
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for args in [
        &["flash-sale", "--stock", "ten"][..],
        &["flash-sale", "--buyers", "0"],
        &["sell"],
        &[],
    ] {
        let out = hotstock(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A parse error names the problem; no arguments at all shows usage.
        assert!(
            stderr.contains("error:") || stderr.contains("Usage: hotstock"),
            "{args:?}: {stderr}"
        );
    }
}
