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

#[test]
fn import_inspect_and_verify_a_data_directory() {
    let dir = std::env::temp_dir().join(format!("hotstock-cli-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("stock.csv");
    std::fs::write(
        &csv,
        "sku,available,per_customer_limit,safety_stock,backorder_limit\ntee-s,10\ntee-m,20,2\n\nps5,100,1\nmug,5,,3,7\n",
    )
    .unwrap();
    let data = dir.join("data");
    let data = data.to_str().unwrap();

    let kits = dir.join("kits.csv");
    std::fs::write(
        &kits,
        "kit,sku,quantity\nduo,tee-s,1\nduo,tee-m,1\nset,mug,2\n",
    )
    .unwrap();
    let kits = kits.to_str().unwrap();
    let locations = dir.join("locations.csv");
    std::fs::write(
        &locations,
        "sku,location,available,safety_stock,priority
hat,berlin,4,1,0
hat,paris,6
",
    )
    .unwrap();
    let locations = locations.to_str().unwrap();
    let out = hotstock(&[
        "import",
        csv.to_str().unwrap(),
        "--locations",
        locations,
        "--kits",
        kits,
        "--data-dir",
        data,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 4 SKUs, 2 locations and 2 kits")
    );

    let out = hotstock(&["inspect", "--data-dir", data]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Bug: a location's stock is a cell of its own in the catalogue, and
    // inspect counted each as a SKU (9).
    assert!(
        text.contains("SKUs                 7\n") && text.contains("locations            2\n"),
        "4 SKUs, 2 kits and a SKU kept at 2 locations: {text}"
    );
    assert!(
        text.contains("units available      145\n"),
        "the safety stock is kept back: {text}"
    );

    let out = hotstock(&["verify", "--data-dir", data]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verify               ok"));
    // The backorder limit column reached the SKU.
    {
        let config = hotstock::durable::DurableConfig::new(
            std::path::Path::new(data),
            hotstock::durable::journal::Durability::Async,
        );
        let (durable, _) = hotstock::durable::DurableEngine::open(config).unwrap();
        let mug = durable.engine().sku("mug").unwrap();
        let doc = durable.engine().sku_document(mug).unwrap();
        assert_eq!((doc.backorder_limit, doc.safety_stock), (7, 3));
        let hat = durable.engine().sku("hat").unwrap();
        let doc = durable.engine().sku_document(hat).unwrap();
        let at: Vec<(u64, u64, u32)> = (doc.locations.unwrap().iter())
            .map(|l| (l.available, l.safety_stock, l.priority))
            .collect();
        assert_eq!(at, vec![(4, 1, 0), (6, 0, 0)]);
        durable.close().unwrap();
    }

    // A bad row anywhere: nothing is imported.
    for bad in [
        "cap,5\nbad name,1\n",
        "cap,5\nhat,1,,-2\n",
        "cap,5\nhat,1,,,x\n",
    ] {
        std::fs::write(&csv, bad).unwrap();
        let out = hotstock(&["import", csv.to_str().unwrap(), "--data-dir", data]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("line 2"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&hotstock(&["inspect", "--data-dir", data]).stdout)
            .into_owned();
        assert!(text.contains("SKUs                 7\n"), "{text}");
    }
    // A bad kits file: a kit of an unknown SKU, or a malformed row; the
    // stock file's SKUs are not imported either.
    std::fs::write(&csv, "cap,5\n").unwrap();
    for bad in ["trio,nope,1\n", "trio,cap\n", "trio,cap,0\n"] {
        let kits_file = dir.join("bad-kits.csv");
        std::fs::write(&kits_file, bad).unwrap();
        let out = hotstock(&[
            "import",
            csv.to_str().unwrap(),
            "--kits",
            kits_file.to_str().unwrap(),
            "--data-dir",
            data,
        ]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was imported"));
        let text = String::from_utf8_lossy(&hotstock(&["inspect", "--data-dir", data]).stdout)
            .into_owned();
        assert!(text.contains("SKUs                 7\n"), "{bad}: {text}");
    }
    // A bad locations file: a SKU with stock of its own, a malformed row,
    // a location named twice; nothing is imported.
    for bad in [
        "cap,a,1\n",
        "tee-s,a,1\n",
        "lamp,a\n",
        "lamp,a b,1\n",
        "lamp,a,1\nlamp,a,2\n",
    ] {
        let locations_file = dir.join("bad-locations.csv");
        std::fs::write(&locations_file, bad).unwrap();
        let out = hotstock(&[
            "import",
            csv.to_str().unwrap(),
            "--locations",
            locations_file.to_str().unwrap(),
            "--data-dir",
            data,
        ]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("nothing was imported"), "{bad}: {stderr}");
        let text = String::from_utf8_lossy(&hotstock(&["inspect", "--data-dir", data]).stdout)
            .into_owned();
        assert!(text.contains("SKUs                 7\n"), "{bad}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_fails_on_a_damaged_journal() {
    let rows: String = (0..50).map(|i| format!("sku-{i},{i}\n")).collect();
    let (dir, data) = imported("verify", &rows);
    // Flip a byte in the middle of the journal.
    let segment = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&segment, bytes).unwrap();
    // The store's checkpoint covers it, so remove the store: verify must
    // read the journal.
    for file in [
        "hotstock.sqlite",
        "hotstock.sqlite-wal",
        "hotstock.sqlite-shm",
    ] {
        let _ = std::fs::remove_file(data.join(file));
    }
    let out = hotstock(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("journal corrupt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A segment made ahead is 64 MiB of zeros on disk before its first frame;
/// `inspect` listed it at that size, which reads as 64 MiB of journal.
#[test]
fn inspect_tells_a_made_ahead_segments_frames_from_its_zeros() {
    let (dir, data) = imported("made-ahead", "sku,available\ntee,10\nmug,5\n");
    let journal = data.join("journal");
    let last = hotstock::durable::list_segments(&journal).unwrap();
    let segment = journal.join(format!("{:016x}.hsj", last.last().unwrap()));
    let frames = std::fs::metadata(&segment).unwrap().len();
    // What a segment made ahead holds past its frames (format 3 allows it).
    let zeros = 64 * 1024;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut file, &vec![0u8; zeros]).unwrap();
    drop(file);

    // And the next segment, made ahead and waiting: disk the journal holds.
    std::fs::write(journal.join("next-segment.zeroed"), vec![0u8; zeros]).unwrap();

    let out = hotstock(&["inspect", "--data-dir", data.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "next segment, made ahead: {zeros} bytes of zeros (next-segment.zeroed)\n"
        )),
        "{text}"
    );
    let on_disk = frames + zeros as u64;
    assert!(
        text.contains(&format!("{frames} bytes of frames, {on_disk} on disk\n")),
        "{text}"
    );
    let out = hotstock(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory for test `name` with `rows` imported into its `data`
/// directory: (the directory, the data directory).
fn imported(name: &str, rows: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("hotstock-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("stock.csv");
    std::fs::write(&csv, rows).unwrap();
    let data = dir.join("data");
    let out = hotstock(&[
        "import",
        csv.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, data)
}
