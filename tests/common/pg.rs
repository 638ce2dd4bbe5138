//! A PostgreSQL server of a test's own, on a loopback port, so the test
//! can stop it, start it again or promote a standby without touching the
//! machine's shared server. Made with the machine's `initdb` and `pg_ctl`
//! (run as the `postgres` user when the test runs as root: PostgreSQL
//! refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    pub dir: PathBuf,
    pub port: u16,
}

/// `initdb` and `pg_ctl`: on `PATH`, or under Debian's versioned directory.
fn tool(name: &str) -> Option<PathBuf> {
    let on_path = Command::new("which").arg(name).output().ok()?;
    if on_path.status.success() {
        let path = String::from_utf8_lossy(&on_path.stdout).trim().to_owned();
        return Some(PathBuf::from(path));
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(Result::ok)
        .map(|v| v.path().join("bin").join(name))
        .find(|p| p.exists())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL tool, as `postgres` when we are root.
fn run(tool: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = match is_root() {
        true => {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        }
        false => Command::new(tool),
    };
    let output = command
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{} {args:?}: {}{}",
            tool.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

impl PrivatePostgres {
    /// A new server in a fresh directory, started; `None` (with a plain
    /// "skipped" line naming `what`) where PostgreSQL's tools are missing.
    pub fn start(what: &str, port: u16) -> Option<PrivatePostgres> {
        PrivatePostgres::start_with(what, port, &[])
    }

    /// `start`, with `settings` (`key = value` lines) added to its
    /// configuration before it starts.
    pub fn start_with(what: &str, port: u16, settings: &[&str]) -> Option<PrivatePostgres> {
        let Some(initdb) = tool("initdb") else {
            let mut err = std::io::stderr();
            let _ = std::io::Write::write_all(
                &mut err,
                format!("skipped {what}: initdb is not installed\n").as_bytes(),
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!("hotstock-pg-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let data = dir.join("data");
        let data_arg = data.to_str().unwrap();
        run(
            &initdb,
            &["-D", data_arg, "-A", "trust", "-U", "postgres", "--no-sync"],
        )
        .expect("initdb");
        let server = PrivatePostgres { dir, port };
        server.configure(settings);
        server.start_again().expect("pg_ctl start");
        Some(server)
    }

    /// A synchronous streaming standby of this server on `port`, started
    /// (the primary must allow replication: `start_primary`).
    pub fn standby(&self, port: u16) -> PrivatePostgres {
        let dir = std::env::temp_dir().join(format!("hotstock-pg-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(&dir);
            assert!(chown.status().unwrap().success());
        }
        let basebackup = tool("pg_basebackup").expect("pg_basebackup");
        let data = dir.join("data");
        let primary_port = self.port.to_string();
        let args = [
            "-D",
            data.to_str().unwrap(),
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port,
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            "-d",
            "application_name=standby",
        ];
        run(&basebackup, &args).expect("pg_basebackup");
        let standby = PrivatePostgres { dir, port };
        standby.start_again().expect("start the standby");
        standby
    }

    /// A primary whose commits wait for a synchronous standby's flush
    /// (once one is attached: `standby`).
    pub fn start_primary(what: &str, port: u16) -> Option<PrivatePostgres> {
        let settings = [
            "wal_level = replica",
            "max_wal_senders = 4",
            "synchronous_commit = on",
        ];
        PrivatePostgres::start_with(what, port, &settings)
    }

    /// Makes every commit wait for the standby named `standby` (after it
    /// is attached, so the setup itself does not wait for it).
    pub fn require_synchronous_standby(&self) {
        self.configure(&["synchronous_standby_names = 'standby'"]);
        let pg_ctl = tool("pg_ctl").expect("pg_ctl");
        run(&pg_ctl, &["-D", &self.data(), "reload"]).expect("reload");
    }

    /// Promotes a standby to primary.
    pub fn promote(&self) -> Result<(), String> {
        let pg_ctl = tool("pg_ctl").ok_or("pg_ctl is not installed")?;
        run(&pg_ctl, &["-D", &self.data(), "-w", "promote"])
    }

    fn configure(&self, settings: &[&str]) {
        use std::io::Write;
        let path = self.dir.join("data").join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        for line in settings {
            writeln!(file, "{line}").unwrap();
        }
    }

    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_owned()
    }

    /// Starts the server (again), waiting until it takes connections.
    pub fn start_again(&self) -> Result<(), String> {
        let pg_ctl = tool("pg_ctl").ok_or("pg_ctl is not installed")?;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        let data = self.data();
        let log = log.to_str().unwrap();
        run(
            &pg_ctl,
            &["-D", &data, "-o", &options, "-l", log, "-w", "start"],
        )
    }

    /// Stops the server at once, as a crash would (no checkpoint).
    pub fn stop_now(&self) -> Result<(), String> {
        let pg_ctl = tool("pg_ctl").ok_or("pg_ctl is not installed")?;
        run(
            &pg_ctl,
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(pg_ctl) = tool("pg_ctl") {
            let _ = run(
                &pg_ctl,
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
