//! Which container a process runs in, from its cgroup: docker
//! (`docker-<id>.scope`, `/docker/<id>`), containerd/CRI
//! (`cri-containerd-<id>.scope`), cri-o (`crio-<id>.scope`), podman
//! (`libpod-<id>.scope`, `/libpod_parent/libpod-<id>`), on cgroup v1 and
//! v2, and the Kubernetes pod UID (`kubepods…pod<uid>`).
//!
//! Looked up when a process's first record is handled (it is alive then:
//! it is in a TLS call) and cached per cgroup path, so that later records
//! of short-lived processes still carry it.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

/// A process's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full id: 64 lower-case hex characters.
    pub id: String,
    /// The Kubernetes pod UID, when the cgroup path names one.
    pub pod_uid: Option<String>,
}

impl Container {
    /// The 12-character id that `docker ps` and `podman ps` show.
    pub fn short(&self) -> &str {
        &self.id[..12]
    }
}

fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container id a cgroup path component names, if any.
fn component_id(c: &str) -> Option<&str> {
    let c = c.strip_suffix(".scope").unwrap_or(c);
    // conmon, podman's monitor, is not the container.
    if c.starts_with("libpod-conmon-") {
        return None;
    }
    let id = match c.rfind('-') {
        Some(i) => &c[i + 1..],
        None => c,
    };
    is_id(id).then_some(id)
}

/// The pod UID a component names: `pod<uid>` (cgroupfs) or
/// `kubepods-<class>-pod<uid with _>.slice` (systemd).
fn component_pod(c: &str) -> Option<String> {
    let c = c.strip_suffix(".slice").unwrap_or(c);
    let i = c.rfind("pod")?;
    if !(i == 0 || c[..i].ends_with('-')) {
        return None;
    }
    let uid = c[i + 3..].replace('_', "-");
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then_some(uid)
}

/// The container of a cgroup path (`/kubepods/burstable/pod…/<id>`).
pub fn of_cgroup_path(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (at, id) = parts
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| Some((i, component_id(c)?)))?;
    let pod_uid = parts[..at].iter().rev().find_map(|c| component_pod(c));
    Some(Container {
        id: id.to_string(),
        pod_uid,
    })
}

/// `/proc/PID/cgroup` read at most (a host has a few dozen lines).
const MAX_CGROUP_FILE: u64 = 64 << 10;

/// The cgroup paths of a process (v2 `0::path`, v1 `N:controllers:path`).
fn cgroup_paths(pid: u32) -> Option<Vec<String>> {
    let f = std::fs::File::open(format!("/proc/{pid}/cgroup")).ok()?;
    let mut text = String::new();
    f.take(MAX_CGROUP_FILE).read_to_string(&mut text).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
            .collect(),
    )
}

/// The container of process `pid`, read now (not cached).
pub fn of_pid(pid: u32) -> Option<Container> {
    cgroup_paths(pid)?.iter().find_map(|p| of_cgroup_path(p))
}

/// Cached containers: by cgroup id, by pid (while records of it come) and
/// by cgroup path.
#[derive(Default)]
pub struct Containers {
    by_cgroup: HashMap<u64, Option<Arc<Container>>>,
    by_pid: HashMap<u32, Option<Arc<Container>>>,
    by_path: HashMap<String, Option<Arc<Container>>>,
}

/// Processes and cgroup paths remembered, at most (then forgotten at once;
/// a forgotten live process is looked up again).
const MAX_CACHED: usize = 65_536;

impl Containers {
    /// The container of `pid` (None: the host, or the process is gone).
    pub fn of(&mut self, pid: u32) -> Option<Arc<Container>> {
        if let Some(c) = self.by_pid.get(&pid) {
            return c.clone();
        }
        if self.by_pid.len() >= MAX_CACHED {
            self.by_pid.clear();
        }
        if self.by_path.len() >= MAX_CACHED {
            self.by_path.clear();
        }
        // Gone: nothing is remembered (a pid number is used again).
        let paths = cgroup_paths(pid)?;
        let mut found = None;
        for p in &paths {
            let c = self
                .by_path
                .entry(p.clone())
                .or_insert_with(|| of_cgroup_path(p).map(Arc::new))
                .clone();
            if c.is_some() {
                found = c;
                break;
            }
        }
        self.by_pid.insert(pid, found.clone());
        found
    }

    /// The container of cgroup `cgroup` (v2 id; 0: unknown), whose name
    /// `name` gives (the kernel's record of it), else of process `pid`. The
    /// pod UID needs the process (only its cgroup path names the pod).
    pub fn of_cgroup(
        &mut self,
        cgroup: u64,
        pid: u32,
        name: &dyn Fn(u64) -> Option<String>,
    ) -> Option<Arc<Container>> {
        if cgroup == 0 {
            return self.of(pid);
        }
        if let Some(c) = self.by_cgroup.get(&cgroup) {
            return c.clone();
        }
        if self.by_cgroup.len() >= MAX_CACHED {
            self.by_cgroup.clear();
        }
        let by_name = name(cgroup).and_then(|n| {
            let id = component_id(&n)?.to_string();
            Some(Arc::new(Container { id, pod_uid: None }))
        });
        let found = match (by_name, self.of(pid)) {
            // The process's own view has the pod too, when it is the same id.
            (Some(k), Some(p)) if p.id == k.id => Some(p),
            (Some(k), _) => Some(k),
            (None, p) => p,
        };
        self.by_cgroup.insert(cgroup, found.clone());
        found
    }

    /// Forgets exited processes.
    pub fn forget(&mut self, alive: &mut dyn FnMut(u32) -> bool) {
        self.by_pid.retain(|pid, _| alive(*pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f5e9c1b2a7d4e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

    #[test]
    fn every_runtime_layout() {
        let cases = [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/system.slice/containerd.service/cri-containerd-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/libpod_parent/libpod-{ID}"),
            format!("/kubepods.slice/kubepods-besteffort.slice/crio-{ID}.scope"),
        ];
        for c in &cases {
            let got = of_cgroup_path(c).unwrap_or_else(|| panic!("{c}"));
            assert_eq!(got.id, ID, "{c}");
            assert_eq!(got.pod_uid, None, "{c}");
        }
        assert_eq!(
            of_cgroup_path("/user.slice/user-1000.slice/session-2.scope"),
            None
        );
        assert_eq!(of_cgroup_path("/"), None);
        assert_eq!(
            of_cgroup_path(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        assert_eq!(of_cgroup_path(&format!("/docker/{}", &ID[..63])), None);
    }

    #[test]
    fn kubernetes_pods() {
        let uid = "1c9f7a2e-55d0-4b8e-9a43-6f2d1e0c7b3a";
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        );
        let cgroupfs = format!("/kubepods/burstable/pod{uid}/{ID}");
        for p in [systemd, cgroupfs] {
            let c = of_cgroup_path(&p).unwrap();
            assert_eq!(c.id, ID);
            assert_eq!(c.pod_uid.as_deref(), Some(uid), "{p}");
            assert_eq!(c.short(), &ID[..12]);
        }
    }

    #[test]
    fn this_process_is_on_the_host() {
        let mut c = Containers::default();
        assert_eq!(c.of(std::process::id()), None);
    }
}
