//! orderly: a concurrency-safe order processing engine.
//!
//! - [`domain`]: pure values and rules (money, stock, reviews); no I/O.
//! - [`store`]: narrow adapters over Postgres, Redis (Lua), MongoDB and RabbitMQ.
//! - [`services`]: the use cases, each joining the stores it needs.
//! - [`http`]: the axum edge; errors become `problem+json` there.
//! - [`messaging`]: RabbitMQ envelope, topology, confirming publisher, shared consumer loop.
//! - [`roles`]: the worker roles (relay, orchestrator, inventory, payments, history).
//! - [`readiness`]: which stores a process can use yet, and setting them up in the background.
//! - [`app`]: wiring, background tasks and graceful shutdown.
//! - [`cli`]: the command line the binary parses.

pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod messaging;
pub mod metrics;
pub mod readiness;
pub mod roles;
pub mod seed;
pub mod services;
pub mod store;
pub mod telemetry;
