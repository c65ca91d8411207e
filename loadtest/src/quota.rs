//! A CPU quota per worker process, as a Kubernetes CPU limit gives a pod: a cgroup of its own
//! whose CFS quota lets it run `cpus` of a CPU per period, throttled past that. cgroup v1's `cpu`
//! controller (`/sys/fs/cgroup/cpu`, `cpu.cfs_quota_us`) where it is mounted, else v2's
//! `cpu.max` on the unified hierarchy; either needs root.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

/// CFS period: the kernel's default, and Kubernetes'.
const PERIOD_US: u64 = 100_000;

const V1: &str = "/sys/fs/cgroup/cpu";
const V2: &str = "/sys/fs/cgroup";

/// One process's cgroup, removed on drop (once its processes are gone).
#[derive(Debug)]
pub struct CpuQuota {
    dir: PathBuf,
    v2: bool,
    pub cpus: f64,
}

/// How often a quota held its processes back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_s: f64,
}

impl Throttling {
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            periods: self.periods.saturating_sub(earlier.periods),
            throttled_periods: self
                .throttled_periods
                .saturating_sub(earlier.throttled_periods),
            throttled_s: self.throttled_s - earlier.throttled_s,
        }
    }
}

impl CpuQuota {
    /// A cgroup named `name` limited to `cpus` CPUs, or why there cannot be one here.
    pub fn create(name: &str, cpus: f64) -> anyhow::Result<Self> {
        // NaN too: it is not above 0.
        if cpus.is_nan() || cpus <= 0.0 {
            bail!("--worker-cpu must be above 0, got {cpus}");
        }
        let quota_us = ((cpus * PERIOD_US as f64).round() as u64).max(1_000);
        let (dir, v2) = if Path::new(V1).join("cpu.cfs_quota_us").exists() {
            (Path::new(V1).join(name), false)
        } else if std::fs::read_to_string(Path::new(V2).join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        {
            (Path::new(V2).join(name), true)
        } else {
            bail!(
                "--worker-cpu needs a cgroup CPU controller: neither {V1}/cpu.cfs_quota_us (v1) nor \
                 the cpu controller in {V2}/cgroup.controllers (v2) is here"
            );
        };
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "--worker-cpu: cannot create the cgroup {} (it needs root)",
                dir.display()
            )
        })?;
        let quota = Self { dir, v2, cpus };
        if v2 {
            quota.write("cpu.max", &format!("{quota_us} {PERIOD_US}"))?;
        } else {
            quota.write("cpu.cfs_period_us", &PERIOD_US.to_string())?;
            quota.write("cpu.cfs_quota_us", &quota_us.to_string())?;
        }
        Ok(quota)
    }

    /// Moves `pid` (and the threads it starts from now on) into the quota.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// A handle that reads this quota's throttling (for a task that samples it).
    pub fn reader(&self) -> QuotaReader {
        QuotaReader {
            dir: self.dir.clone(),
            v2: self.v2,
        }
    }
}

/// Reads a quota's throttling; cheap to clone.
#[derive(Debug, Clone)]
pub struct QuotaReader {
    dir: PathBuf,
    v2: bool,
}

impl QuotaReader {
    /// Throttling so far.
    pub fn throttling(&self) -> Throttling {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        let throttled_s = if self.v2 {
            field("throttled_usec ") as f64 / 1e6
        } else {
            field("throttled_time ") as f64 / 1e9
        };
        Throttling {
            periods: field("nr_periods "),
            throttled_periods: field("nr_throttled "),
            throttled_s,
        }
    }
}

impl CpuQuota {
    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        std::fs::write(self.dir.join(file), value).with_context(|| {
            format!(
                "--worker-cpu: writing {value} to {}/{file}",
                self.dir.display()
            )
        })
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Only an empty cgroup can go; the processes are stopped before the quotas drop.
        let _ = std::fs::remove_dir(&self.dir);
    }
}
