//! CPU time by process group, read from `/proc`: orderly's processes, each store's server
//! processes, and the load generator itself. The difference of two samples, divided by the
//! sagas completed between them, is the CPU a saga costs the whole machine.

use std::collections::BTreeMap;
use std::fs;

use serde::Serialize;

/// Linux reports process times in clock ticks of 1/100 s (`getconf CLK_TCK`) on every platform
/// it runs on today.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) by group.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuTimes(pub BTreeMap<String, f64>);

impl CpuTimes {
    /// Seconds spent per group between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(group, secs)| {
                    let before = earlier.0.get(group).copied().unwrap_or(0.0);
                    (group.clone(), (secs - before).max(0.0))
                })
                .collect(),
        )
    }

    /// Every group but the load generator: what serving the load cost.
    pub fn system_total(&self) -> f64 {
        self.0
            .iter()
            .filter(|(group, _)| group.as_str() != LOADTEST)
            .map(|(_, secs)| secs)
            .sum()
    }
}

const LOADTEST: &str = "loadtest";

/// Which group a process belongs to, by its command name; `None` for processes we ignore.
fn group_of(comm: &str) -> Option<&'static str> {
    match comm {
        "postgres" => Some("postgres"),
        c if c.starts_with("redis-server") => Some("redis"),
        "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => Some("rabbitmq"),
        c if c.starts_with("secantus") || c == "mongod" => Some("mongodb"),
        _ => None,
    }
}

/// Samples every process now. `orderly` lists the pids of orderly's processes.
pub fn sample(orderly: &[u32]) -> CpuTimes {
    let me = std::process::id();
    let mut groups: BTreeMap<String, f64> = ["orderly", "postgres", "redis", "rabbitmq", "mongodb"]
        .into_iter()
        .map(|g| (g.to_owned(), 0.0))
        .collect();
    groups.insert(LOADTEST.into(), 0.0);
    let Ok(entries) = fs::read_dir("/proc") else {
        return CpuTimes(groups);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((comm, ticks)) = parse_stat(&stat) else {
            continue;
        };
        let group = if pid == me {
            Some(LOADTEST)
        } else if orderly.contains(&pid) {
            Some("orderly")
        } else {
            group_of(comm)
        };
        if let Some(group) = group {
            *groups.entry(group.to_owned()).or_default() += ticks as f64 / TICKS_PER_SECOND;
        }
    }
    CpuTimes(groups)
}

/// CPU seconds one process has used so far, or `None` once it is gone.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, ticks)| ticks as f64 / TICKS_PER_SECOND)
}

/// The command name and the CPU ticks of a `/proc/<pid>/stat` line: its own user and system
/// time plus that of its children already reaped (Postgres backends that exited, say).
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    // The name is in parentheses and may itself hold spaces or parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // Fields 14..=17 of proc(5) (utime, stime, cutime, cstime); `fields[0]` is field 3.
    let ticks = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some((comm, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_name_and_the_four_time_fields() {
        let stat = "42 (redis-server *:6379) S 1 42 42 0 -1 4194560 1 0 0 0 250 50 7 3 20 0 5 0";
        assert_eq!(parse_stat(stat), Some(("redis-server *:6379", 310)));
    }

    #[test]
    fn a_name_with_parentheses_does_not_shift_the_fields() {
        let stat = "7 (a) b) R 1 1 1 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0";
        assert_eq!(parse_stat(stat), Some(("a) b", 10)));
    }

    #[test]
    fn the_load_generator_is_not_part_of_the_system_total() {
        let times = CpuTimes(
            [("orderly", 2.0), ("postgres", 1.0), ("loadtest", 5.0)]
                .into_iter()
                .map(|(g, s)| (g.to_owned(), s))
                .collect(),
        );
        assert_eq!(times.system_total(), 3.0);
    }
}
