//! A headless Chromium driven over the W3C WebDriver protocol (Debian's
//! `chromium` and `chromium-driver`, which `scripts/test` installs). The
//! protocol is plain JSON over HTTP, so this speaks it with reqwest rather
//! than pulling in a WebDriver crate and its second TLS and HTTP stacks.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

#[derive(Clone)]
pub struct Element(String);

impl Browser {
    pub async fn start() -> Browser {
        let driver_bin = std::env::var("GATEHOUSE_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("GATEHOUSE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = super::free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{driver_bin}: {e} (scripts/test installs chromium-driver)"));
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if http.get(format!("{root}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer: Value =
            http.post(format!("{root}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {answer}"))
            .to_owned();
        Browser { http, session: format!("{root}/session/{id}"), driver, _profile: profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
        match answer["value"].get("error") {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await.unwrap()
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// Runs a script in the page (`arguments[i]` are `args`); its result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args})).await
    }

    /// The first element matching `xpath`, waiting up to 10 s for it.
    pub async fn find(&self, xpath: &str) -> Element {
        let mut last = String::new();
        for _ in 0..100 {
            match self.call(reqwest::Method::POST, "/element", Some(json!({"using": "xpath", "value": xpath}))).await {
                Ok(found) => return Element(found[ELEMENT].as_str().unwrap().to_owned()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element {xpath} after 10 s ({last}); the page says: {}", self.page_text().await);
    }

    /// How many elements match `xpath` now.
    pub async fn count(&self, xpath: &str) -> usize {
        let found = self.post("/elements", json!({"using": "xpath", "value": xpath})).await;
        found.as_array().map_or(0, Vec::len)
    }

    pub async fn click(&self, xpath: &str) {
        self.on_element(xpath, |e| (reqwest::Method::POST, format!("/element/{e}/click"), Some(json!({})))).await;
    }

    /// Finds `xpath` and sends it one command, finding it again when the page
    /// replaced it in between (a list re-rendered), for up to 10 s.
    async fn on_element(
        &self,
        xpath: &str,
        command: impl Fn(&str) -> (reqwest::Method, String, Option<Value>),
    ) -> Value {
        let mut last = String::new();
        for _ in 0..100 {
            let e = self.find(xpath).await;
            let (method, path, body) = command(&e.0);
            match self.call(method, &path, body).await {
                Ok(v) => return v,
                Err(err) => last = err,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{xpath}: {last}");
    }

    /// Types into a field (after clearing it). `\u{E007}` is the Enter key.
    pub async fn type_into(&self, xpath: &str, text: &str) {
        let e = self.find(xpath).await;
        self.post(&format!("/element/{}/clear", e.0), json!({})).await;
        self.post(&format!("/element/{}/value", e.0), json!({"text": text})).await;
    }

    /// Chooses an option of a `<select>` by its value.
    pub async fn select(&self, xpath: &str, value: &str) {
        self.click(&format!("{xpath}/option[@value='{value}']")).await;
    }

    pub async fn text(&self, xpath: &str) -> String {
        let v = self.on_element(xpath, |e| (reqwest::Method::GET, format!("/element/{e}/text"), None)).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits up to 10 s for `xpath`'s text to contain `needle`.
    pub async fn wait_for_text(&self, xpath: &str, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..100 {
            text = self.text(xpath).await;
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{xpath} never said {needle:?}; it says {text:?}");
    }

    /// Everything the page shows, as text.
    pub async fn page_text(&self) -> String {
        self.execute("return document.body.innerText;", json!([])).await.as_str().unwrap_or_default().to_owned()
    }

    /// The page's whole DOM as HTML.
    pub async fn page_html(&self) -> String {
        self.execute("return document.documentElement.outerHTML;", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height})).await;
    }

    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await.unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Ends the session (Chromium exits) and stops the driver.
    pub async fn close(mut self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
