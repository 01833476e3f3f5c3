//! A small JSON client for the REST API.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::TestServer;
use gatehouse::domain::Role;

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Api {
    pub fn new(s: &TestServer) -> Api {
        Api { base: s.url(""), http: reqwest::Client::new() }
    }

    pub async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        Reply { status, headers, body }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send("POST", path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send("GET", path, token, None).await
    }

    pub async fn register(&self, email: &str, password: &str) -> Reply {
        self.post("/auth/register", None, json!({"email": email, "password": password, "name": "Test"})).await
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self.post("/auth/login", None, json!({"email": email, "password": password})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["access_token"].as_str().unwrap().to_owned()
    }
}

impl Reply {
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        assert!(self.body["error"]["message"].is_string());
    }
}

/// A user with a password, created through the API's own admin path.
pub async fn user_with_password(s: &TestServer, email: &str, role: Role) -> String {
    let password = "correct horse battery";
    s.accounts
        .create_user_with_password(email, None, role, "default", Some(gatehouse::secret::Secret::new(password)))
        .await
        .unwrap();
    Api::new(s).login(email, password).await
}
