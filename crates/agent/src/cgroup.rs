//! A task's own cgroup, for its task-level `cpu` and `memory` (what the ECS agent does with
//! `ECS_ENABLE_TASK_CPU_MEM_LIMIT`): `/berth/TASKID`, made before the task's first container
//! and given to every container of the task (its `awsvpc` pause container too) as Docker's
//! `CgroupParent`, so the kernel holds the task's containers together to the task's size.
//! A container's own limit may be bigger than the task's: the task's caps it.
//!
//! - cgroup v1: the directory in the memory hierarchy, with `memory.limit_in_bytes` (and
//!   `memory.memsw.limit_in_bytes`, where swap is accounted, so swap does not escape it), and
//!   in the cpu hierarchy, with a CFS quota (a hard cap, as Fargate has) and the task's shares.
//!   Docker makes the same path in every other hierarchy when the first container starts, so
//!   removing goes through all of them.
//! - cgroup v2: the directory under the root, with `memory.max` (and `memory.swap.max` 0),
//!   `cpu.max` and `cpu.weight`, the cpu and memory controllers enabled on the way.
//!
//! A host without a writable cgroup filesystem runs tasks without their cgroup: that is said
//! once, and no task fails for it.

use crate::runtime::RuntimeError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where the cgroup filesystem is mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup every task's cgroup is made in.
pub const PARENT: &str = "berth";

/// The CFS period of a task's CPU quota, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;

/// The kernel's smallest CFS quota, in microseconds.
pub const MIN_QUOTA_US: u64 = 1_000;

/// The kernel's bounds of cgroup v1 `cpu.shares`.
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

/// The v1 hierarchies the agent makes a task's directory in (Docker makes the rest).
pub const V1_HIERARCHIES: [&str; 2] = ["memory", "cpu"];

/// How often removing a task's cgroup is tried: it fails while processes remain in it.
const REMOVE_ATTEMPTS: u32 = 5;

/// Which cgroup filesystem the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller, at `ROOT/CONTROLLER`.
    V1,
    /// The unified hierarchy at `ROOT`.
    V2,
}

/// Whether `id` (a task ARN's last segment) can name a directory: no separators, no `.` or
/// `..`. Pure.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The task-level sizes that limit anything: a size of 0 is no limit. Pure.
pub fn limits(cpu_units: Option<u32>, memory_mib: Option<u32>) -> (Option<u32>, Option<u32>) {
    (cpu_units.filter(|c| *c > 0), memory_mib.filter(|m| *m > 0))
}

/// Whether a task of these sizes gets a cgroup. Pure.
pub fn wanted(cpu_units: Option<u32>, memory_mib: Option<u32>) -> bool {
    let (cpu, memory) = limits(cpu_units, memory_mib);
    cpu.is_some() || memory.is_some()
}

/// Docker's `CgroupParent` of the task's containers: `/berth/TASKID`. Pure.
pub fn cgroup_parent(task_id: &str) -> String {
    format!("/{PARENT}/{task_id}")
}

/// The CFS quota of `cpu_units` (1024 a vCPU) per [`CFS_PERIOD_US`], at least
/// [`MIN_QUOTA_US`]. Pure.
pub fn quota_us(cpu_units: u32) -> u64 {
    (u64::from(cpu_units) * CFS_PERIOD_US / 1024).max(MIN_QUOTA_US)
}

/// The v1 `cpu.shares` of `cpu_units`, as for containers: the units, at least 2. Pure.
pub fn shares(cpu_units: u32) -> u64 {
    u64::from(cpu_units).clamp(MIN_SHARES, MAX_SHARES)
}

/// The v2 `cpu.weight` of v1 `shares`, as runc converts them ([2, 262144] onto
/// [1, 10000]). Pure.
pub fn weight(shares: u64) -> u64 {
    let s = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + (s - MIN_SHARES) * 9_999 / (MAX_SHARES - MIN_SHARES)
}

/// A task's directory in the v1 hierarchy `hierarchy`. Pure.
pub fn v1_dir(root: &Path, hierarchy: &str, task_id: &str) -> PathBuf {
    root.join(hierarchy).join(PARENT).join(task_id)
}

/// A task's directory in the v2 hierarchy. Pure.
pub fn v2_dir(root: &Path, task_id: &str) -> PathBuf {
    root.join(PARENT).join(task_id)
}

/// The v1 files to write, in order, as `(hierarchy, file, value)`; `memsw` when the memory
/// hierarchy accounts swap. The memory limit goes before the memory-and-swap limit, which may
/// not be below it. Pure.
pub fn v1_settings(
    cpu_units: Option<u32>,
    memory_mib: Option<u32>,
    memsw: bool,
) -> Vec<(&'static str, &'static str, String)> {
    let (cpu, memory) = limits(cpu_units, memory_mib);
    let mut out = Vec::new();
    if let Some(m) = memory {
        let bytes = (u64::from(m) << 20).to_string();
        out.push(("memory", "memory.limit_in_bytes", bytes.clone()));
        if memsw {
            out.push(("memory", "memory.memsw.limit_in_bytes", bytes));
        }
    }
    if let Some(c) = cpu {
        out.push(("cpu", "cpu.cfs_period_us", CFS_PERIOD_US.to_string()));
        out.push(("cpu", "cpu.cfs_quota_us", quota_us(c).to_string()));
        out.push(("cpu", "cpu.shares", shares(c).to_string()));
    }
    out
}

/// The v2 files to write, in order, as `(file, value)`; `swap` when the cgroup has
/// `memory.swap.max`. Pure.
pub fn v2_settings(
    cpu_units: Option<u32>,
    memory_mib: Option<u32>,
    swap: bool,
) -> Vec<(&'static str, String)> {
    let (cpu, memory) = limits(cpu_units, memory_mib);
    let mut out = Vec::new();
    if let Some(m) = memory {
        out.push(("memory.max", (u64::from(m) << 20).to_string()));
        if swap {
            out.push(("memory.swap.max", "0".to_string()));
        }
    }
    if let Some(c) = cpu {
        out.push(("cpu.max", format!("{} {CFS_PERIOD_US}", quota_us(c))));
        out.push(("cpu.weight", weight(shares(c)).to_string()));
    }
    out
}

/// What to write to a `cgroup.subtree_control` that has `enabled` (its contents) so that
/// `wanted` controllers are enabled too (`+cpu +memory`); `None` when they are. Pure.
pub fn to_enable(enabled: &str, wanted: &[&str]) -> Option<String> {
    let on: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !on.contains(*w))
        .map(|w| format!("+{w}"))
        .collect();
    (!missing.is_empty()).then(|| missing.join(" "))
}

/// Whether `path` exists.
async fn exists(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok()
}

/// Makes the directory `dir`, whose parent exists; one already there is fine.
async fn mkdir(dir: &Path) -> std::io::Result<()> {
    match tokio::fs::create_dir(dir).await {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Makes `ROOT…/berth` and `ROOT…/berth/TASKID` under `base`.
async fn mkdir_task(base: &Path, task_id: &str) -> std::io::Result<PathBuf> {
    let parent = base.join(PARENT);
    mkdir(&parent).await?;
    let dir = parent.join(task_id);
    mkdir(&dir).await?;
    Ok(dir)
}

/// Writes `value` to the control file `path`.
async fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    tokio::fs::write(path, value).await.map_err(|e| {
        RuntimeError::Cgroup(format!("cannot write {value} to {}: {e}", path.display()))
    })
}

/// Enables `wanted` controllers in the `cgroup.subtree_control` of `dir`, unless they are.
async fn enable(dir: &Path, wanted: &[&str]) -> std::io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = tokio::fs::read_to_string(&file).await.unwrap_or_default();
    match to_enable(&enabled, wanted) {
        Some(line) => tokio::fs::write(&file, line).await,
        None => Ok(()),
    }
}

/// Tasks' cgroups on this host's cgroup filesystem.
#[derive(Debug)]
pub struct TaskCgroups {
    root: PathBuf,
    /// Whether it was said that tasks run without their cgroup.
    warned: AtomicBool,
    /// Between attempts to remove a task's cgroup.
    retry_delay: Duration,
}

impl Default for TaskCgroups {
    fn default() -> Self {
        TaskCgroups::new(ROOT)
    }
}

impl TaskCgroups {
    /// Tasks' cgroups on the cgroup filesystem mounted at `root` (normally [`ROOT`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TaskCgroups {
            root: root.into(),
            warned: AtomicBool::new(false),
            retry_delay: Duration::from_secs(1),
        }
    }

    /// The host's cgroup filesystem, when it has the cpu and memory controllers where the
    /// agent looks for them.
    pub async fn version(&self) -> Option<Version> {
        let r = &self.root;
        if exists(&r.join("cgroup.controllers")).await {
            Some(Version::V2)
        } else if exists(&r.join("memory").join("memory.limit_in_bytes")).await
            && exists(&r.join("cpu").join("cpu.shares")).await
        {
            Some(Version::V1)
        } else {
            None
        }
    }

    /// Says (once; later only at debug level) that tasks run without their cgroup, and why.
    /// Always `None`: no cgroup parent.
    pub fn cannot(&self, why: &str) -> Option<String> {
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!(reason = why, "a task runs without a cgroup of its own");
        } else {
            tracing::warn!(
                reason = why,
                "tasks run without a cgroup of their own: task-level cpu and memory are not enforced"
            );
        }
        None
    }

    /// Makes (or finds: after an agent restart it is there) the cgroup of task `task_id` for
    /// its task-level sizes and returns Docker's cgroup parent for its containers. `None`
    /// when the task has no size, or the host cannot (said once). An error is a cgroup made
    /// that would not take the task's limits.
    pub async fn ensure(
        &self,
        task_id: &str,
        cpu_units: Option<u32>,
        memory_mib: Option<u32>,
    ) -> Result<Option<String>, RuntimeError> {
        if !wanted(cpu_units, memory_mib) {
            return Ok(None);
        }
        if !valid_task_id(task_id) {
            return Err(RuntimeError::Cgroup(format!(
                "the task id {task_id:?} cannot name a cgroup"
            )));
        }
        match self.version().await {
            Some(Version::V1) => self.ensure_v1(task_id, cpu_units, memory_mib).await,
            Some(Version::V2) => self.ensure_v2(task_id, cpu_units, memory_mib).await,
            None => Ok(self.cannot(&format!(
                "no cgroup v2, nor cgroup v1 memory and cpu hierarchies, at {}",
                self.root.display()
            ))),
        }
    }

    async fn ensure_v1(
        &self,
        task_id: &str,
        cpu_units: Option<u32>,
        memory_mib: Option<u32>,
    ) -> Result<Option<String>, RuntimeError> {
        for h in V1_HIERARCHIES {
            if let Err(e) = mkdir_task(&self.root.join(h), task_id).await {
                let dir = v1_dir(&self.root, h, task_id);
                return Ok(self.cannot(&format!("cannot make {}: {e}", dir.display())));
            }
        }
        let memsw_file = v1_dir(&self.root, "memory", task_id).join("memory.memsw.limit_in_bytes");
        let memsw = exists(&memsw_file).await;
        for (h, file, value) in v1_settings(cpu_units, memory_mib, memsw) {
            write(&v1_dir(&self.root, h, task_id).join(file), &value).await?;
        }
        Ok(Some(cgroup_parent(task_id)))
    }

    async fn ensure_v2(
        &self,
        task_id: &str,
        cpu_units: Option<u32>,
        memory_mib: Option<u32>,
    ) -> Result<Option<String>, RuntimeError> {
        const CONTROLLERS: [&str; 2] = ["cpu", "memory"];
        let root = &self.root;
        let available = tokio::fs::read_to_string(root.join("cgroup.controllers"))
            .await
            .unwrap_or_default();
        if to_enable(&available, &CONTROLLERS).is_some() {
            return Ok(self.cannot(&format!(
                "the cgroup v2 root {} lacks the cpu or memory controller",
                root.display()
            )));
        }
        let parent = root.join(PARENT);
        let made = async {
            enable(root, &CONTROLLERS).await?;
            mkdir(&parent).await?;
            enable(&parent, &CONTROLLERS).await?;
            mkdir(&parent.join(task_id)).await
        };
        if let Err(e) = made.await {
            return Ok(self.cannot(&format!(
                "cannot make {} with the cpu and memory controllers: {e}",
                v2_dir(root, task_id).display()
            )));
        }
        let dir = v2_dir(root, task_id);
        let swap = exists(&dir.join("memory.swap.max")).await;
        for (file, value) in v2_settings(cpu_units, memory_mib, swap) {
            write(&dir.join(file), &value).await?;
        }
        Ok(Some(cgroup_parent(task_id)))
    }

    /// The directories of task `task_id`'s cgroup: under v1 in every hierarchy mounted at the
    /// root (Docker makes the path in each).
    async fn dirs(&self, task_id: &str) -> Vec<PathBuf> {
        match self.version().await {
            Some(Version::V2) => vec![v2_dir(&self.root, task_id)],
            Some(Version::V1) => {
                let mut hierarchies: Vec<String> =
                    V1_HIERARCHIES.iter().map(|h| h.to_string()).collect();
                if let Ok(mut entries) = tokio::fs::read_dir(&self.root).await {
                    while let Ok(Some(e)) = entries.next_entry().await {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if !hierarchies.contains(&name) {
                            hierarchies.push(name);
                        }
                    }
                }
                hierarchies
                    .iter()
                    .map(|h| v1_dir(&self.root, h, task_id))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// Removes task `task_id`'s cgroup, once its processes are gone: tried a few times, then
    /// left with a warning. One not there is fine.
    pub async fn remove(&self, task_id: &str) {
        if !valid_task_id(task_id) {
            return;
        }
        let mut left = self.dirs(task_id).await;
        let mut last_error = String::new();
        for attempt in 1..=REMOVE_ATTEMPTS {
            let mut still = Vec::new();
            for dir in left {
                match tokio::fs::remove_dir(&dir).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        last_error = format!("{}: {e}", dir.display());
                        still.push(dir);
                    }
                }
            }
            left = still;
            if left.is_empty() {
                return;
            }
            if attempt < REMOVE_ATTEMPTS {
                tokio::time::sleep(self.retry_delay).await;
            }
        }
        tracing::warn!(
            task = task_id,
            error = last_error,
            left = left.len(),
            "cannot remove the task's cgroup"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_settings_cap_memory_and_swap_and_cpu() {
        let s = v1_settings(Some(256), Some(512), true);
        assert_eq!(
            s,
            [
                ("memory", "memory.limit_in_bytes", "536870912".to_string()),
                (
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    "536870912".to_string()
                ),
                ("cpu", "cpu.cfs_period_us", "100000".to_string()),
                ("cpu", "cpu.cfs_quota_us", "25000".to_string()),
                ("cpu", "cpu.shares", "256".to_string()),
            ]
        );
        assert_eq!(
            v1_settings(None, Some(64), false),
            [("memory", "memory.limit_in_bytes", (64u64 << 20).to_string())],
            "no swap accounting: no memsw file; no cpu: no cpu files"
        );
        assert_eq!(v1_settings(Some(1024), None, true).len(), 3);
        assert!(
            v1_settings(Some(0), Some(0), true).is_empty(),
            "0 limits nothing"
        );
    }

    #[test]
    fn v2_settings_cap_memory_swap_and_cpu() {
        assert_eq!(
            v2_settings(Some(2048), Some(1024), true),
            [
                ("memory.max", (1024u64 << 20).to_string()),
                ("memory.swap.max", "0".to_string()),
                ("cpu.max", "200000 100000".to_string()),
                ("cpu.weight", "79".to_string()),
            ]
        );
        assert_eq!(
            v2_settings(Some(512), None, false),
            [
                ("cpu.max", "50000 100000".to_string()),
                ("cpu.weight", "20".to_string())
            ]
        );
    }

    #[test]
    fn cpu_units_become_a_quota_shares_and_a_weight() {
        assert_eq!(quota_us(1024), 100_000, "one vCPU: the whole period");
        assert_eq!(quota_us(256), 25_000);
        assert_eq!(quota_us(4096), 400_000, "more than one CPU");
        assert_eq!(quota_us(1), MIN_QUOTA_US, "at least the kernel's minimum");
        assert_eq!(quota_us(u32::MAX), u64::from(u32::MAX) * 100_000 / 1024);
        assert_eq!((shares(0), shares(1), shares(256)), (2, 2, 256));
        assert_eq!(shares(u32::MAX), 262_144);
        assert_eq!((weight(2), weight(1024), weight(262_144)), (1, 39, 10_000));
    }

    #[test]
    fn paths_and_names() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(cgroup_parent("abc123"), "/berth/abc123");
        assert_eq!(
            v1_dir(root, "memory", "abc123"),
            Path::new("/sys/fs/cgroup/memory/berth/abc123")
        );
        assert_eq!(
            v2_dir(root, "abc123"),
            Path::new("/sys/fs/cgroup/berth/abc123")
        );
        assert!(valid_task_id("0f3c5e6a9b8d4c2e8f1a2b3c4d5e6f70"));
        for bad in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(!valid_task_id(bad), "{bad:?}");
        }
        assert!(wanted(Some(256), None) && wanted(None, Some(512)));
        assert!(!wanted(None, None) && !wanted(Some(0), Some(0)));
    }

    #[test]
    fn only_missing_controllers_are_enabled() {
        assert_eq!(
            to_enable("", &["cpu", "memory"]).as_deref(),
            Some("+cpu +memory")
        );
        assert_eq!(
            to_enable("cpuset cpu io\n", &["cpu", "memory"]).as_deref(),
            Some("+memory")
        );
        assert_eq!(to_enable("memory pids cpu", &["cpu", "memory"]), None);
        assert_eq!(
            to_enable("cpuset", &["cpu"]).as_deref(),
            Some("+cpu"),
            "cpuset is not cpu"
        );
    }

    /// A directory laid out as a v1 cgroup filesystem's root (the kernel's files that the
    /// agent looks for; the kernel makes the rest when a directory is made).
    fn v1_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (h, f) in [("memory", "memory.limit_in_bytes"), ("cpu", "cpu.shares")] {
            std::fs::create_dir(d.path().join(h)).unwrap();
            std::fs::write(d.path().join(h).join(f), "").unwrap();
        }
        std::fs::create_dir(d.path().join("pids")).unwrap();
        d
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[tokio::test]
    async fn a_v1_task_cgroup_is_made_reused_and_removed() {
        let d = v1_root();
        let cg = TaskCgroups::new(d.path());
        assert_eq!(cg.version().await, Some(Version::V1));
        let parent = cg.ensure("t1", Some(256), Some(64)).await.unwrap();
        assert_eq!(parent.as_deref(), Some("/berth/t1"));
        let mem = v1_dir(d.path(), "memory", "t1");
        let cpu = v1_dir(d.path(), "cpu", "t1");
        assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
        assert!(!mem.join("memory.memsw.limit_in_bytes").exists());
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(cpu.join("cpu.shares")), "256");
        // After an agent restart it is there: made again, the same.
        std::fs::write(mem.join("memory.memsw.limit_in_bytes"), "").unwrap();
        let again = cg.ensure("t1", Some(256), Some(64)).await.unwrap();
        assert_eq!(again, parent);
        assert_eq!(read(mem.join("memory.memsw.limit_in_bytes")), "67108864");
        assert_eq!(
            cg.ensure("t2", None, None).await.unwrap(),
            None,
            "no size, no cgroup"
        );
        assert!(!v1_dir(d.path(), "memory", "t2").exists());

        // Docker made the path in the other hierarchies too.
        std::fs::create_dir_all(v1_dir(d.path(), "pids", "t1")).unwrap();
        for dir in [&mem, &cpu] {
            for f in std::fs::read_dir(dir).unwrap() {
                std::fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
        cg.remove("t1").await;
        for h in ["memory", "cpu", "pids"] {
            assert!(!v1_dir(d.path(), h, "t1").exists(), "{h}");
        }
        assert!(d.path().join("memory").join(PARENT).exists(), "berth stays");
        cg.remove("t1").await;
    }

    #[tokio::test]
    async fn a_cgroup_that_stays_busy_is_left_after_a_few_attempts() {
        let d = v1_root();
        let cg = TaskCgroups {
            retry_delay: Duration::from_millis(1),
            ..TaskCgroups::new(d.path())
        };
        cg.ensure("t1", None, Some(64)).await.unwrap();
        // Not empty, as a cgroup with processes.
        cg.remove("t1").await;
        assert!(v1_dir(d.path(), "memory", "t1").exists());
    }

    #[tokio::test]
    async fn a_v2_task_cgroup_enables_its_controllers() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "cpu io memory pids\n").unwrap();
        let cg = TaskCgroups::new(root);
        assert_eq!(cg.version().await, Some(Version::V2));
        let parent = cg.ensure("t1", Some(512), Some(128)).await.unwrap();
        assert_eq!(parent.as_deref(), Some("/berth/t1"));
        assert_eq!(
            read(root.join("cgroup.subtree_control")),
            "cpu io memory pids\n",
            "already enabled: not written"
        );
        assert_eq!(
            read(root.join(PARENT).join("cgroup.subtree_control")),
            "+cpu +memory"
        );
        let dir = v2_dir(root, "t1");
        assert_eq!(read(dir.join("memory.max")), (128u64 << 20).to_string());
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
        assert_eq!(read(dir.join("cpu.weight")), "20");
        for f in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        cg.remove("t1").await;
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn a_host_without_cgroups_runs_tasks_without() {
        let d = tempfile::tempdir().unwrap();
        let cg = TaskCgroups::new(d.path());
        assert_eq!(cg.version().await, None);
        assert_eq!(cg.ensure("t1", Some(256), Some(64)).await.unwrap(), None);
        assert_eq!(cg.ensure("t2", Some(256), None).await.unwrap(), None);
        assert!(cg.warned.load(Ordering::Relaxed));
        assert!(
            std::fs::read_dir(d.path()).unwrap().next().is_none(),
            "nothing made"
        );
        cg.remove("t1").await;
        // A v2 root without the memory controller.
        std::fs::write(d.path().join("cgroup.controllers"), "cpu pids").unwrap();
        assert_eq!(cg.ensure("t1", Some(256), Some(64)).await.unwrap(), None);
        assert!(!d.path().join(PARENT).exists());
    }

    #[tokio::test]
    async fn a_bad_task_id_is_an_error() {
        let d = v1_root();
        let cg = TaskCgroups::new(d.path());
        assert!(cg.ensure("../x", Some(256), None).await.is_err());
        assert!(!d.path().join("x").exists());
    }
}
