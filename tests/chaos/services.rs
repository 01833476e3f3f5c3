//! What the replicas depend on, each of which a fault takes away: a Redis
//! primary with a replica and a Sentinel, the OpenID provider, and TLS files
//! signed by a CA of the run's own (Postgres is `common::postgres`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::free_port;

fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    command.stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap()).spawn().unwrap()
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Redis primary and a replica watched by one Sentinel (quorum 1), as
/// service `gatehouse`. Either node may be primary after a failover.
pub struct Redis {
    dir: PathBuf,
    pub sentinel: u16,
    nodes: BTreeMap<u16, Child>,
    sentinel_child: Child,
}

impl Redis {
    pub async fn start(dir: &Path) -> Redis {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        let (primary, replica, sentinel) = (free_port(), free_port(), free_port());
        let mut redis = Redis { dir: dir.clone(), sentinel, nodes: BTreeMap::new(), sentinel_child: dummy() };
        redis.start_node(primary, None);
        wait_for(|| redis_cli(primary, &["PING"]).is_some_and(|o| o.contains("PONG")), "redis primary").await;
        redis.start_node(replica, Some(primary));
        wait_for(
            || redis_cli(replica, &["INFO", "replication"]).is_some_and(|o| o.contains("master_link_status:up")),
            "redis replica in sync",
        )
        .await;
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {}\nsentinel monitor gatehouse 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds gatehouse 1000\nsentinel failover-timeout gatehouse 4000\n",
                dir.display()
            ),
        )
        .unwrap();
        redis.sentinel_child =
            spawn_logged(Command::new("redis-server").arg(&conf).arg("--sentinel"), &dir.join("sentinel.log"));
        wait_for(
            || {
                redis_cli(sentinel, &["SENTINEL", "REPLICAS", "gatehouse"])
                    .is_some_and(|o| o.contains(&replica.to_string()))
            },
            "sentinel sees the replica",
        )
        .await;
        redis
    }

    fn start_node(&mut self, port: u16, replica_of: Option<u16>) {
        let mut c = Command::new("redis-server");
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        c.arg("--dir").arg(&self.dir);
        if let Some(primary) = replica_of {
            c.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let child = spawn_logged(&mut c, &self.dir.join(format!("{port}.log")));
        self.nodes.insert(port, child);
    }

    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/gatehouse", self.sentinel)
    }

    /// The primary's port, as the Sentinel says.
    pub fn primary(&self) -> Option<u16> {
        let out = redis_cli(self.sentinel, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "gatehouse"])?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// SIGKILLs the primary; its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary().expect("a primary");
        if let Some(mut child) = self.nodes.remove(&port) {
            let _ = child.kill();
            let _ = child.wait();
        }
        port
    }

    /// Waits until the Sentinel names a primary other than `old`.
    pub async fn wait_promoted(&self, old: u16) {
        wait_for(|| self.primary().is_some_and(|p| p != old), "sentinel failover").await;
    }

    /// Starts the node on `port` again, as a replica of the current primary.
    pub async fn restart_as_replica(&mut self, port: u16) {
        let primary = self.primary().expect("a primary");
        self.start_node(port, Some(primary));
        wait_for(|| redis_cli(port, &["PING"]).is_some_and(|o| o.contains("PONG")), "redis node back").await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        for child in self.nodes.values_mut().chain(std::iter::once(&mut self.sentinel_child)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A placeholder child, replaced before use.
fn dummy() -> Child {
    Command::new("true").spawn().unwrap()
}

async fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 30 s");
}

/// The suite's OpenID provider (tests/oidc/provider.mjs) on a fixed port.
pub struct Provider {
    pub port: u16,
    keys: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Machine clients whose tokens the load uses (besides `gatehouse`, `plain`
/// and `short-lived`, which provider.mjs always has).
pub const EXTRA_CLIENTS: [&str; 3] = ["svc-0", "svc-1", "svc-2"];

impl Provider {
    pub async fn start(dir: &Path) -> Provider {
        let mut p =
            Provider { port: free_port(), keys: dir.join("oidc-keys.json"), log: dir.join("oidc.log"), child: None };
        p.spawn().await;
        p
    }

    fn script() -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(dir.join("node_modules/oidc-provider").exists(), "oidc-provider is not installed: run scripts/chaos");
        dir.join("provider.mjs")
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn spawn(&mut self) {
        let extra: serde_json::Map<String, serde_json::Value> =
            EXTRA_CLIENTS.iter().map(|c| ((*c).to_owned(), serde_json::json!({}))).collect();
        let child = spawn_logged(
            Command::new("node")
                .arg(Self::script())
                .args(["serve", self.keys.to_str().unwrap(), &self.port.to_string()])
                .env("EXTRA_CLIENTS", serde_json::Value::Object(extra).to_string()),
            &self.log,
        );
        self.child = Some(child);
        let url = format!("{}/.well-known/openid-configuration", self.issuer());
        for _ in 0..300 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("oidc-provider did not start in 30 s: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new signing key in front of the old ones (the provider must be stopped).
    pub fn rotate_keys(&self) {
        let status =
            Command::new("node").arg(Self::script()).args(["rotate", self.keys.to_str().unwrap()]).status().unwrap();
        assert!(status.success());
    }
}

/// An access token for `client` (client credentials) from the provider at
/// `issuer`, or None while it is away.
pub async fn token(http: &reqwest::Client, issuer: &str, client: &str) -> Option<String> {
    let secret = format!("{client}-secret");
    let form =
        [("grant_type", "client_credentials"), ("client_id", client), ("client_secret", &secret), ("scope", "api")];
    let r = http.post(format!("{issuer}/token")).form(&form).send().await.ok()?;
    let body: serde_json::Value = r.json().await.ok()?;
    body["access_token"].as_str().map(ToOwned::to_owned)
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// TLS files from a CA of the run's own: two server certificates for
/// `localhost` / 127.0.0.1 (`a` and `b`, to swap on disk) and a client
/// certificate for Envoy (mTLS), all in `dir`.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        let dir = dir.join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=chaos CA"],
        ]
        .concat());
        for (name, cn, usage) in
            [("a", "localhost", "serverAuth"), ("b", "localhost", "serverAuth"), ("client", "envoy", "clientAuth")]
        {
            let ext = format!("{name}.ext");
            std::fs::write(
                dir.join(&ext),
                format!("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
            )
            .unwrap();
            let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
            run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]].concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The DER of certificate `name` (`a`, `b`).
    pub fn der(&self, name: &str) -> Vec<u8> {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(self.dir.join(format!("{name}.pem"))).unwrap().to_vec()
    }

    /// Installs server certificate `name` where the replicas read theirs
    /// (`tls.crt`, `tls.key`), each file replaced at once by a rename.
    pub fn install(&self, name: &str) {
        for (from, to) in [(format!("{name}.key"), "tls.key"), (format!("{name}.pem"), "tls.crt")] {
            let tmp = self.dir.join(format!("{to}.new"));
            std::fs::copy(self.dir.join(from), &tmp).unwrap();
            std::fs::rename(&tmp, self.dir.join(to)).unwrap();
        }
    }
}
