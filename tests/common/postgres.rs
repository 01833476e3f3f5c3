//! Postgres servers of a test's own, for tests that stop them or need a
//! streaming replica (the suite's shared server must stay up for the rest).

/// A Postgres server of this test's own (initdb into a temporary directory,
/// with the binaries next to the suite's `pg_ctl`), so it can be stopped and
/// started without disturbing the tests that share the suite's server.
pub struct OwnPostgres {
    pg_ctl: std::path::PathBuf,
    data: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn command(program: &std::path::Path) -> std::process::Command {
        // Postgres refuses to run as root: use the account the package made.
        if running_as_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }

    fn run(mut c: std::process::Command) {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn init() -> OwnPostgres {
        let pg_ctl = std::path::PathBuf::from(
            std::env::var("GATEHOUSE_TEST_PG_CTL")
                .expect("GATEHOUSE_TEST_PG_CTL is not set: run the suite with scripts/test"),
        );
        let data = tempfile::Builder::new().prefix("gatehouse-own-pg").tempdir().unwrap();
        if running_as_root() {
            Self::run({
                let mut c = std::process::Command::new("chown");
                c.args(["-R", "postgres"]).arg(data.path());
                c
            });
        }
        let mut initdb = Self::command(&pg_ctl.with_file_name("initdb"));
        initdb.arg("-D").arg(data.path().join("db")).args(["-U", "postgres", "--auth=trust", "--no-sync"]);
        Self::run(initdb);
        let port = super::free_port();
        let pg = OwnPostgres { pg_ctl, data, port };
        pg.start();
        pg
    }

    pub fn start(&self) {
        let db = self.data.path().join("db");
        let mut c = Self::command(&self.pg_ctl);
        c.arg("-D").arg(&db).arg("-l").arg(db.join("log")).arg("-w").arg("-o").arg(format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.path().display()
        ));
        c.arg("start");
        Self::run(c);
    }

    pub fn stop(&self) {
        let mut c = Self::command(&self.pg_ctl);
        c.arg("-D").arg(self.data.path().join("db")).args(["-m", "fast", "-w", "stop"]);
        Self::run(c);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A streaming replica of this server (pg_basebackup), started, read-only.
    pub fn replica(&self) -> OwnPostgres {
        let data = tempfile::Builder::new().prefix("gatehouse-own-pg-replica").tempdir().unwrap();
        if running_as_root() {
            Self::run({
                let mut c = std::process::Command::new("chown");
                c.args(["-R", "postgres"]).arg(data.path());
                c
            });
        }
        let mut backup = Self::command(&self.pg_ctl.with_file_name("pg_basebackup"));
        backup.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-X", "stream", "-R", "-D"]);
        backup.arg(data.path().join("db"));
        Self::run(backup);
        let replica = OwnPostgres { pg_ctl: self.pg_ctl.clone(), data, port: super::free_port() };
        replica.start();
        replica
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let mut c = Self::command(&self.pg_ctl);
        c.arg("-D").arg(self.data.path().join("db")).args(["-m", "immediate", "stop"]);
        let _ = c.output();
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
