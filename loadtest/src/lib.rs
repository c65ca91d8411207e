//! orderly's load test: concurrent checkout, browse and flash-sale load against real orderly
//! processes on their own namespace in real stores, followed by a verification of every invariant
//! in `design.md`, a report in Markdown and JSON, and a chart.
//!
//! `orderly-loadtest run checkout` is the whole thing; docs/performance.md has the commands and
//! the latest numbers.

pub mod baseline;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod cpu;
pub mod driver;
pub mod proxy;
pub mod quota;
pub mod report;
pub mod run;
pub mod scale;
pub mod scenario;
pub mod stats;
pub mod system;
pub mod verify;
pub mod work;
