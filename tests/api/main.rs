//! Integration tests against real Postgres, Redis, MongoDB and RabbitMQ. One binary, so the
//! build links once; every test isolates its stores through `helpers::spawn_app`.

mod auth;
mod bad_input;
mod cancels;
mod chaos;
mod customers;
mod dashboard;
mod dead_letters;
mod docs;
mod helpers;
mod leases;
mod loadtest;
mod messaging;
mod ops;
mod orders;
mod outages;
mod pgbouncer;
mod processes;
mod products;
mod reconcile;
mod reservations;
mod retention;
mod reviews;
mod sagas;
mod seed;
mod stock;
mod tls;
