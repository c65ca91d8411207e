//! orderly's HTTP API as the load test uses it, written against `api.md` like any outside client.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// An answer: its status and, when it is JSON, its body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    fn str_field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(Value::as_str)
    }

    pub fn id(&self) -> Option<Uuid> {
        self.str_field("id").and_then(|s| s.parse().ok())
    }

    /// An order's final state as `status` or `status/reason`; `None` while it is pending.
    pub fn settled_as(&self) -> Option<String> {
        let status = self.str_field("status")?;
        if status == "pending" {
            return None;
        }
        Some(match self.str_field("reason") {
            Some(reason) => format!("{status}/{reason}"),
            None => status.to_owned(),
        })
    }

    pub fn next_cursor(&self) -> Option<String> {
        self.str_field("next_cursor").map(str::to_owned)
    }
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
    #[serde(default)]
    token: Option<String>,
}

impl Api {
    pub fn new(base: &str, max_connections: usize) -> anyhow::Result<Self> {
        Self::with_timeout(base, max_connections, Duration::from_secs(60))
    }

    /// A client that gives up on an answer after `timeout` (a lost answer, to a retrying client).
    pub fn with_timeout(
        base: &str,
        max_connections: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_connections)
            .timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Result<Answer> {
        self.send_reading(request, |bytes| {
            serde_json::from_slice(bytes).unwrap_or(Value::Null)
        })
        .await
    }

    /// Sends `request`; `read` turns the body into what the answer keeps.
    async fn send_reading(
        &self,
        request: reqwest::RequestBuilder,
        read: impl FnOnce(&[u8]) -> Value,
    ) -> reqwest::Result<Answer> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok(Answer {
            status,
            body: read(&bytes),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every store answers: the API is ready on Postgres alone, but a run needs them all.
    pub async fn ready(&self) -> bool {
        match self.send(self.http.get(self.url("/readyz"))).await {
            Ok(Answer { status: 200, body }) => body
                .as_object()
                .is_some_and(|stores| stores.values().all(|state| state == "ok")),
            _ => false,
        }
    }

    pub async fn create_product(
        &self,
        admin: &str,
        sku: &str,
        price_minor: i64,
        category: &str,
        initial_stock: i64,
    ) -> anyhow::Result<Uuid> {
        let body = json!({
            "sku": sku, "name": format!("Load test {sku}"), "price_minor": price_minor,
            "category": category, "description": format!("Product {sku}, made by the load test."),
            "initial_stock": initial_stock,
        });
        let answer = self
            .send(
                self.http
                    .post(self.url("/products"))
                    .bearer_auth(admin)
                    .json(&body),
            )
            .await?;
        Ok(created(answer, "POST /products")?.id)
    }

    /// Creates a customer with an opening balance; returns its id and bearer token.
    pub async fn create_customer(
        &self,
        admin: &str,
        email: &str,
        balance_minor: i64,
    ) -> anyhow::Result<(Uuid, String)> {
        let body =
            json!({ "name": "Load test buyer", "email": email, "balance_minor": balance_minor });
        let answer = self
            .send(
                self.http
                    .post(self.url("/customers"))
                    .bearer_auth(admin)
                    .json(&body),
            )
            .await?;
        let customer = created(answer, "POST /customers")?;
        let token = customer
            .token
            .context("POST /customers answered without a token")?;
        Ok((customer.id, token))
    }

    pub async fn place_order(
        &self,
        token: &str,
        key: &str,
        lines: &[(Uuid, u32)],
    ) -> reqwest::Result<Answer> {
        let items: Vec<Value> = lines
            .iter()
            .map(|(product, quantity)| json!({ "product_id": product, "quantity": quantity }))
            .collect();
        self.send(
            self.http
                .post(self.url("/orders"))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&json!({ "items": items })),
        )
        .await
    }

    pub async fn order_when_settled(
        &self,
        token: &str,
        order: Uuid,
        wait_secs: u32,
    ) -> reqwest::Result<Answer> {
        self.send(
            self.http
                .get(self.url(&format!("/orders/{order}?wait={wait_secs}")))
                .bearer_auth(token),
        )
        .await
    }

    pub async fn cancel(&self, token: &str, order: Uuid) -> reqwest::Result<Answer> {
        self.send(
            self.http
                .post(self.url(&format!("/orders/{order}/cancel")))
                .bearer_auth(token),
        )
        .await
    }

    /// A page of 100 products, read for its cursor and item count only: a JSON tree of every
    /// product would cost the generator as much CPU as the server spends answering.
    pub async fn products_page(&self, cursor: Option<&str>) -> reqwest::Result<Answer> {
        #[derive(Deserialize)]
        struct Head {
            items: Vec<serde::de::IgnoredAny>,
            next_cursor: Option<String>,
        }
        let mut request = self
            .http
            .get(self.url("/products"))
            .query(&[("limit", "100")]);
        if let Some(cursor) = cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        self.send_reading(request, |bytes| {
            match serde_json::from_slice::<Head>(bytes) {
                Ok(head) => json!({
                    "item_count": head.items.len(),
                    "next_cursor": head.next_cursor,
                }),
                Err(_) => Value::Null,
            }
        })
        .await
    }

    pub async fn product(&self, id: Uuid) -> reqwest::Result<Answer> {
        self.send(self.http.get(self.url(&format!("/products/{id}"))))
            .await
    }

    /// `GET` any path with a token, for the verifier's reads through the API.
    pub async fn get(&self, token: &str, path: &str) -> anyhow::Result<Answer> {
        Ok(self
            .send(self.http.get(self.url(path)).bearer_auth(token))
            .await?)
    }
}

fn created(answer: Answer, what: &str) -> anyhow::Result<Created> {
    if answer.status != 201 {
        bail!("{what} answered {}: {}", answer.status, answer.body);
    }
    Ok(serde_json::from_value(answer.body)?)
}
