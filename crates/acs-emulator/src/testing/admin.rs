//! An in-process emulator for a test, and a client of its admin API (what the emulator saw:
//! identities, token verdicts, request counts).

use crate::{EmulatorConfig, EmulatorHandle, serve};
use acs_client::AccessKey;
use serde_json::Value;
use std::time::Duration;

/// The access key of every in-process emulator (base64 of `emulator-test-key-0123456789abcdef`).
pub const TEST_KEY: &str = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";

/// Starts an in-process emulator on 127.0.0.1 with the test key.
pub async fn start_emulator(configure: impl FnOnce(&mut EmulatorConfig)) -> EmulatorHandle {
    let mut config = EmulatorConfig::new(AccessKey::from_base64(TEST_KEY).unwrap());
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(config, listener).await.unwrap()
}

/// The emulator's admin API (no auth, plain JSON).
#[derive(Clone)]
pub struct Admin {
    base: url::Url,
    http: reqwest::Client,
}

impl Admin {
    pub fn new(emulator: &EmulatorHandle, ca_pem: Option<&str>) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .resolve("localhost", emulator.local_addr());
        if let Some(pem) = ca_pem {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        }
        Self {
            base: emulator.endpoint().clone(),
            http: builder.build().unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(self.base.join(path).unwrap())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(self.base.join(path).unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "POST {path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    /// `{"valid":..,"reason":..}` for a token.
    pub async fn verify(&self, token: &str) -> (bool, String) {
        let v = self
            .post("admin/tokens:verify", serde_json::json!({ "token": token }))
            .await;
        (
            v["valid"].as_bool().unwrap(),
            v["reason"].as_str().unwrap().to_string(),
        )
    }

    /// The admin view of the identities that are not deleted.
    pub async fn live_identities(&self) -> Vec<Value> {
        self.get("admin/identities").await["identities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["deleted"] == false)
            .cloned()
            .collect()
    }

    /// The admin view of one identity, `None` when the emulator never saw it.
    pub async fn identity(&self, id: &str) -> Option<Value> {
        let all = self.get("admin/identities").await;
        all["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
    }

    /// Data-plane requests answered, by operation and status.
    pub async fn count(&self, operation: &str, status: u16) -> u64 {
        let stats = self.get("admin/stats").await;
        stats["operations"][operation][status.to_string()]
            .as_u64()
            .unwrap_or(0)
    }
}
