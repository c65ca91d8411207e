//! Checkout and the order endpoints: the `api` role's side of the saga.
//!
//! A checkout writes, in one statement, the idempotency key, the order at catalog prices, its
//! saga and two outbox rows (`reserve_stock` and the `order_placed` history event). From there
//! the saga belongs to the workers; this module only reads what they did, and records a
//! customer's cancel for the orchestrator to act on.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{SubsecRound, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{ServiceError, Stores, backlog::Backlog, page::Page};
use crate::{
    domain::{
        FieldViolation,
        order::{self, OrderLine, OrderStatus},
        saga::{Command, FactKind, Policy, Saga},
    },
    messaging::{
        self,
        envelope::{Envelope, HistoryEvent, SagaReply},
        sends::{Addressee, NewEvent, Sends},
    },
    metrics::{Metrics, SagaLabels},
    store::{
        history::OrderHistory,
        postgres::{
            checkout::{self, Placement},
            orders::{self, NewOrder},
            outbox, products,
            sagas::{self, SagaFilter, SagaRow},
        },
    },
};

/// An order with its items and the saga now in charge of it.
pub type OrderView = orders::OrderWithSaga;

/// Who is asking: `None` for the admin, or the customer whose orders alone may be seen.
pub type Viewer = Option<Uuid>;

#[derive(Clone)]
pub struct Orders {
    stores: Stores,
    currency: String,
    policy: Policy,
    metrics: Arc<Metrics>,
    watch: Arc<OrderWatch>,
    backlog: Arc<Backlog>,
    /// A customer's pending orders at which its checkouts are refused; 0: no bound.
    per_customer: i64,
}

impl Orders {
    pub fn new(
        stores: Stores,
        currency: String,
        policy: Policy,
        metrics: Arc<Metrics>,
        max_pending: i64,
        per_customer: i64,
    ) -> Self {
        metrics.orders_pending_limit.set(max_pending);
        Self {
            backlog: Arc::new(Backlog::new(max_pending, metrics.orders_pending.clone())),
            per_customer,
            stores,
            currency,
            policy,
            metrics,
            watch: Arc::new(OrderWatch::default()),
        }
    }

    /// Refuses a checkout while too many orders wait to settle (counted as refused), unless it
    /// is the retry of one that went through: that one gets its order even now. Asked before
    /// the body is read, so under overload a refusal costs one indexed read, never a write.
    pub async fn admit(&self, customer_id: Uuid, key: &str) -> Result<(), ServiceError> {
        if self.backlog.admits()
            || orders::key_use(&self.stores.pg, customer_id, key)
                .await?
                .is_some()
        {
            return Ok(());
        }
        self.metrics.checkouts_refused.inc();
        Err(ServiceError::Overloaded)
    }

    /// Places an order, or returns the one this customer already placed with this key (`false`
    /// then). The same key with different lines is refused, and so is a new order while the
    /// customer has its bound of orders pending. Call [`Self::admit`] first.
    pub async fn checkout(
        &self,
        customer_id: Uuid,
        key: &str,
        lines: &[OrderLine],
    ) -> Result<(OrderView, bool), ServiceError> {
        let request_hash = request_hash(lines);
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let prices: HashMap<Uuid, i64> = products::live_prices(&self.stores.pg, &ids)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<FieldViolation> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !prices.contains_key(&l.product_id))
            .map(|(i, _)| FieldViolation {
                field: format!("items[{i}].product_id"),
                message: "no such product".into(),
            })
            .collect();
        if !missing.is_empty() {
            // A retry of a checkout that went through gets its order even if a product has
            // gone since. A refused request claims no key: the client may fix it and reuse it.
            return match self.replay(customer_id, key, &request_hash).await? {
                Some(view) => Ok((view, false)),
                None => Err(ServiceError::Invalid(missing)),
            };
        }
        let priced: Vec<(Uuid, i64, i64)> = lines
            .iter()
            .map(|l| (l.product_id, l.quantity, prices[&l.product_id]))
            .collect();
        let total_minor = order::total(priced.iter().map(|&(_, q, p)| (q, p)));

        // Postgres keeps microseconds: the answer, built from memory, must match later reads.
        let now = Utc::now().trunc_subsecs(6);
        let order_id = Uuid::now_v7();
        let saga_id = Uuid::now_v7();
        let (saga, first) = Saga::checkout(now, &self.policy);
        let trace = messaging::new_traceparent();
        let to = Addressee {
            order_id,
            saga_id,
            customer_id,
            amount_minor: total_minor,
            lines,
        };
        let commands: Vec<(Uuid, Command)> = first.commands.iter().map(|&c| (saga_id, c)).collect();
        let placed = NewEvent {
            kind: FactKind::OrderPlaced.as_str(),
            data: json!({ "saga_id": saga_id, "total_minor": total_minor, "lines": lines.len() }),
        };
        let mut sends = Sends::default();
        sends.record_transition(&to, 0, &commands, vec![placed], now, &trace);
        let outgoing = sends.finish();
        let placement = Placement {
            order: NewOrder {
                id: order_id,
                customer_id,
                total_minor,
                currency: &self.currency,
                saga_id,
                lines: &priced,
            },
            key,
            request_hash: &request_hash,
            saga: &saga,
            outgoing: &outgoing,
            max_pending: self.per_customer,
        };
        let Some((order, items)) = checkout::place(&self.stores.pg, &placement).await? else {
            // Either the key was used first (by this request's earlier try, or by a concurrent
            // one the insert waited for; keys are never deleted, so it is there to read), or the
            // customer had its bound of orders pending and nothing was written.
            return match self.replay(customer_id, key, &request_hash).await? {
                Some(view) => Ok((view, false)),
                None => {
                    self.metrics.checkouts_rate_limited.inc();
                    Err(ServiceError::RateLimited)
                }
            };
        };
        let view = OrderView {
            order,
            items,
            saga: SagaRow {
                id: saga_id,
                order_id,
                version: 1,
                saga,
            },
        };
        self.metrics
            .sagas_started
            .get_or_create(&SagaLabels { kind: "checkout" })
            .inc();
        tracing::info!(order_id = %order_id, saga_id = %saga_id, traceparent = %trace, "order placed");
        Ok((view, true))
    }

    /// The order `(customer, key)` placed, if the key was used: refused when it was used for a
    /// different request.
    async fn replay(
        &self,
        customer_id: Uuid,
        key: &str,
        request_hash: &[u8],
    ) -> Result<Option<OrderView>, ServiceError> {
        match orders::key_use(&self.stores.pg, customer_id, key).await? {
            None => Ok(None),
            Some((first, _)) if first != request_hash => Err(ServiceError::IdempotencyKeyReused),
            Some((_, order_id)) => Ok(Some(self.view(None, order_id).await?)),
        }
    }

    /// An order the viewer may see.
    pub async fn view(&self, viewer: Viewer, order_id: Uuid) -> Result<OrderView, ServiceError> {
        orders::find_with_saga(&self.stores.pg, order_id)
            .await?
            .filter(|v| viewer.is_none_or(|c| c == v.order.customer_id))
            .ok_or(ServiceError::NotFound("order"))
    }

    /// Like [`Self::view`], but while the order is `pending` waits up to `wait` for it to
    /// settle.
    pub async fn view_when_settled(
        &self,
        viewer: Viewer,
        order_id: Uuid,
        wait: Duration,
    ) -> Result<OrderView, ServiceError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let waiter = self.watch.waiter(order_id);
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            // Registered before reading, so a settlement between the read and the wait still
            // wakes us.
            notified.as_mut().enable();
            let view = self.view(viewer, order_id).await?;
            let now = tokio::time::Instant::now();
            if view.order.status() != OrderStatus::Pending || now >= deadline {
                return Ok(view);
            }
            // Without a listener, notifications may be lost: poll once a second until it is back.
            let nap = if self.watch.is_listening() {
                deadline - now
            } else {
                (deadline - now).min(Duration::from_secs(1))
            };
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    /// A page of orders, newest first.
    pub async fn list(
        &self,
        viewer: Viewer,
        status: Option<OrderStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Page<OrderView>, ServiceError> {
        let views = orders::list(&self.stores.pg, viewer, status, before, limit + 1).await?;
        Ok(Page::from_overfetch(views, limit, |v| v.order.id))
    }

    /// Records the customer's cancel and asks the orchestrator to act on it. The update itself
    /// decides, on the order as it is when it runs: an order read first could be settled by the
    /// orchestrator before the write.
    pub async fn cancel(&self, viewer: Viewer, order_id: Uuid) -> Result<OrderView, ServiceError> {
        let mut tx = self.stores.pg.begin().await?;
        let Some(order) = orders::request_cancel(&mut tx, order_id, viewer).await? else {
            drop(tx);
            let current = self.view(viewer, order_id).await?;
            let status = current.order.status();
            if status.is_final() {
                return Err(ServiceError::InvalidTransition(format!(
                    "the order is already {}",
                    status.as_str()
                )));
            }
            // Not ended, so its cancel was recorded before: a retry, which changes nothing.
            return Ok(current);
        };
        let trace = messaging::new_traceparent();
        let mut sends = Sends::default();
        sends.send(
            &Envelope::new(order.saga_id, order_id, 1, SagaReply::CancelRequested)
                .with_traceparent(Some(trace.clone())),
        );
        let requested = NewEvent {
            kind: FactKind::CancelRequested.as_str(),
            data: json!({ "saga_id": order.saga_id, "status": order.status }),
        };
        // The update took the event's seq already: it is the order's last.
        let to = Addressee {
            order_id,
            saga_id: order.saga_id,
            customer_id: order.customer_id,
            amount_minor: order.total_minor,
            lines: &[],
        };
        sends.record_transition(
            &to,
            order.last_seq - 1,
            &[],
            vec![requested],
            Utc::now(),
            &trace,
        );
        outbox::enqueue(&mut tx, &sends.finish()).await?;
        tx.commit().await?;
        self.view(viewer, order_id).await
    }

    /// The order's history from MongoDB, contiguous from seq 1.
    pub async fn history(
        &self,
        viewer: Viewer,
        order_id: Uuid,
    ) -> Result<Vec<HistoryEvent>, ServiceError> {
        self.view(viewer, order_id).await?;
        Ok(OrderHistory::new(self.stores.docs.database())
            .events(order_id)
            .await?)
    }

    /// A saga, if the viewer may see its order.
    pub async fn saga(&self, viewer: Viewer, saga_id: Uuid) -> Result<SagaRow, ServiceError> {
        let mut conn = self.stores.pg.acquire().await?;
        let saga = sagas::find(&mut conn, saga_id)
            .await?
            .ok_or(ServiceError::NotFound("saga"))?;
        let order = orders::find(&mut conn, saga.order_id).await?;
        match order {
            Some(o) if viewer.is_none_or(|c| c == o.customer_id) => Ok(saga),
            _ => Err(ServiceError::NotFound("saga")),
        }
    }

    /// Sagas matching `filter`, newest first (the admin's search).
    pub async fn search_sagas(
        &self,
        filter: &SagaFilter,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Page<SagaRow>, ServiceError> {
        let rows = sagas::search(&self.stores.pg, filter, before, limit + 1).await?;
        Ok(Page::from_overfetch(rows, limit, |s| s.id))
    }

    /// Keeps the count of pending orders that admission control reads, until shutdown.
    pub async fn run_backlog_watch(self, shutdown: watch::Receiver<bool>) {
        self.backlog
            .run_watch(self.stores.pg.clone(), shutdown)
            .await;
    }

    /// Wakes `?wait=` requests when Postgres says an order left `pending`, until shutdown.
    pub async fn run_settlement_listener(self, mut shutdown: watch::Receiver<bool>) {
        let mut listener = loop {
            match sqlx::postgres::PgListener::connect_with(&self.stores.pg).await {
                Ok(mut l) => match l.listen("orderly_order_settled").await {
                    Ok(()) => break l,
                    Err(e) => tracing::warn!(error = %e, "cannot listen for settled orders"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot listen for settled orders"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        };
        self.watch.set_listening(true);
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => {
                        self.watch.set_listening(true);
                        if let Ok(id) = n.payload().parse() {
                            self.watch.settled(id);
                        }
                    }
                    // The connection dropped and is back: whatever settled in between was not
                    // announced, so every waiter reads again.
                    Ok(None) => {
                        self.watch.set_listening(true);
                        self.watch.wake_all();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "settled-order notifications interrupted");
                        self.watch.set_listening(false);
                        self.watch.wake_all();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A checkout's lines, hashed: what "the same body" means for an idempotency key.
fn request_hash(lines: &[OrderLine]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for line in lines {
        hasher.update(line.product_id.as_bytes());
        hasher.update(line.quantity.to_be_bytes());
    }
    hasher.finalize().to_vec()
}

/// Requests waiting for orders to settle, by order.
#[derive(Default)]
struct OrderWatch {
    waiting: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Whether settlements are being announced; waiters poll while they are not.
    listening: AtomicBool,
}

struct Waiter<'a> {
    watch: &'a OrderWatch,
    order_id: Uuid,
    notify: Arc<Notify>,
}

impl OrderWatch {
    fn waiter(&self, order_id: Uuid) -> Waiter<'_> {
        let notify = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(order_id)
            .or_default()
            .clone();
        Waiter {
            watch: self,
            order_id,
            notify,
        }
    }

    fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::Relaxed);
    }

    /// Wakes every waiter to read its order again.
    fn wake_all(&self) {
        let all: Vec<Arc<Notify>> = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, notify)| notify)
            .collect();
        for notify in all {
            notify.notify_waiters();
        }
    }

    fn settled(&self, order_id: Uuid) {
        let notify = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&order_id);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }
}

impl Drop for Waiter<'_> {
    // The last waiter of an order removes its entry, so the map holds only live waits.
    fn drop(&mut self) {
        let mut waiting = self.watch.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiting.get(&self.order_id)
            && Arc::ptr_eq(n, &self.notify)
            && Arc::strong_count(n) == 2
        {
            waiting.remove(&self.order_id);
        }
    }
}
