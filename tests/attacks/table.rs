//! A table of attacks and the one runner that sends them through Envoy.

use crate::common::{Envoy, TestServer, spawn_echo};

/// One attempt: a raw HTTP/1.1 request line and headers as the attacker
/// writes them (nothing normalized by a client library), and the status the
/// client must receive.
pub struct Attack {
    pub name: &'static str,
    pub method: &'static str,
    /// Sent as is, byte for byte.
    pub target: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
    pub want: u16,
}

impl Attack {
    pub fn new(name: &'static str, method: &'static str, target: &'static str, want: u16) -> Attack {
        Attack { name, method, target, headers: Vec::new(), body: None, want }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Attack {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Attack {
        self.body = Some(body.into());
        self
    }
}

/// Gatehouse behind a real Envoy (shipped config) in front of an echo upstream.
pub struct Stack {
    pub gatehouse: TestServer,
    pub envoy: Envoy,
}

impl Stack {
    pub async fn start(gatehouse: TestServer) -> Stack {
        let upstream = spawn_echo().await;
        let envoy = Envoy::start(&gatehouse, upstream).await;
        Stack { gatehouse, envoy }
    }

    /// Sends every row and reports all that got the wrong answer at once.
    pub async fn run(&self, attacks: &[Attack]) {
        let mut wrong = Vec::new();
        for a in attacks {
            let (status, head) = raw_request(self.envoy.port, a).await;
            if status != a.want {
                wrong.push(format!("{}: {} {} -> {status}, want {}\n{head}", a.name, a.method, a.target, a.want));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} attacks got the wrong answer:\n{}",
            wrong.len(),
            attacks.len(),
            wrong.join("\n")
        );
    }
}

/// Sends one request over a fresh TCP connection exactly as written; returns
/// the status and the response head and start of the body (for messages).
pub async fn raw_request(port: u16, a: &Attack) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut request = format!("{} {} HTTP/1.1\r\n", a.method, a.target);
    if !a.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str("host: gateway.test\r\n");
    }
    for (k, v) in &a.headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = &a.body
        && !a.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
    {
        request.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    request.push_str("connection: close\r\n\r\n");
    if let Some(body) = &a.body {
        request.push_str(body);
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "{}: no answer from Envoy within 20 s", a.name);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.chars().take(600).collect())
}
