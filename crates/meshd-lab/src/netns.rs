//! A bare network namespace, `msh-<tag>-<pid hex>-<n>`, unique per process, deleted when its
//! last handle drops (so also when a test panics), whose threads can run inside it: for
//! tests that run the data plane in-process ([`Netns::thread`], [`Netns::block_on`]) and
//! read the kernel's state back ([`Netns::addresses`], [`Netns::routes`]).
//!
//! Made for tests: every failure panics with what failed.

use std::collections::BTreeSet;
use std::future::Future;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::IpNet;
use meshd_engine::sys::netns;
use serde_json::Value;

/// Runs a command and returns its output, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {args:?}: {e} (tests need iproute2 and iputils-ping)")
        })
}

/// Runs a command that must succeed; returns its stdout.
pub fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted when the last clone drops.
#[derive(Debug, Clone)]
pub struct Netns(Arc<Named>);

#[derive(Debug)]
pub struct Named {
    pub name: String,
}

impl std::ops::Deref for Netns {
    type Target = Named;
    fn deref(&self) -> &Named {
        &self.0
    }
}

impl Netns {
    /// A new namespace, `msh-ns-<pid hex>-<n>`, with loopback up.
    #[expect(
        clippy::new_without_default,
        reason = "it creates a namespace: a side effect, not a default value"
    )]
    pub fn new() -> Netns {
        Netns::tagged("ns")
    }

    /// A new namespace, `msh-<tag>-<pid hex>-<n>`, with loopback up: the tag says which
    /// test made it.
    pub fn tagged(tag: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "msh-{tag}-{:x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        must(&["ip", "netns", "add", &name]);
        let ns = Netns(Arc::new(Named { name }));
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        must(&all)
    }

    /// `ip -j -n <ns> <args>` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["ip", "-j", "-n", &self.name];
        all.extend_from_slice(args);
        let out = must(&all);
        if out.trim().is_empty() {
            return Value::Array(Vec::new());
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j output {out:?}: {e}"))
    }

    /// `ip netns exec <ns> <args>`, whatever its exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    pub fn link_exists(&self, ifname: &str) -> bool {
        run(&["ip", "-n", &self.name, "link", "show", "dev", ifname])
            .status
            .success()
    }

    /// Addresses on `ifname` other than link-local ones, with prefix lengths.
    pub fn addresses(&self, ifname: &str) -> BTreeSet<IpNet> {
        let v = self.ip_json(&["addr", "show", "dev", ifname]);
        let mut out = BTreeSet::new();
        for info in v[0]["addr_info"].as_array().into_iter().flatten() {
            if info["scope"] == "link" {
                continue;
            }
            let text = format!(
                "{}/{}",
                info["local"].as_str().expect("ip -j addr has local"),
                info["prefixlen"]
            );
            out.insert(text.parse().expect("ip prints valid prefixes"));
        }
        out
    }

    /// Destinations of the routes on `ifname` matching `filter` (e.g. `["proto", "109"]`),
    /// both families.
    pub fn routes(&self, ifname: &str, filter: &[&str]) -> BTreeSet<IpNet> {
        let mut out = BTreeSet::new();
        for family in ["-4", "-6"] {
            let mut args = vec![family, "route", "show", "dev", ifname];
            args.extend_from_slice(filter);
            let v = self.ip_json(&args);
            for r in v.as_array().into_iter().flatten() {
                let dst = r["dst"].as_str().expect("ip -j route has dst");
                if dst.starts_with("fe80:") || dst.starts_with("ff00:") || dst == "multicast" {
                    continue;
                }
                let dst = if dst.contains('/') {
                    dst.to_owned()
                } else if family == "-4" {
                    format!("{dst}/32")
                } else {
                    format!("{dst}/128")
                };
                out.insert(dst.parse().expect("ip prints valid prefixes"));
            }
        }
        out
    }

    /// The MTU and flags of `ifname`.
    pub fn link(&self, ifname: &str) -> (u64, Vec<String>) {
        let v = self.ip_json(&["link", "show", "dev", ifname]);
        let mtu = v[0]["mtu"].as_u64().expect("ip -j link has mtu");
        let flags = v[0]["flags"]
            .as_array()
            .expect("ip -j link has flags")
            .iter()
            .map(|f| f.as_str().expect("flags are strings").to_owned())
            .collect();
        (mtu, flags)
    }

    /// Runs `f` on a new thread inside this namespace, on a runtime built there, and returns
    /// its result (re-raising its panic).
    pub fn block_on<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let name = self.name.clone();
        let thread = std::thread::spawn(move || {
            netns::enter(&name).expect("enter the namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Moves the calling thread into this namespace for good: every process it starts
    /// afterwards lives there too. For a test that runs processes in a namespace of its own.
    pub fn enter(&self) {
        netns::enter(&self.name).expect("enter the namespace");
    }

    /// Runs a blocking `f` on a new thread inside this namespace.
    pub fn thread<F, T>(&self, f: F) -> std::thread::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name = self.name.clone();
        std::thread::spawn(move || {
            netns::enter(&name).expect("enter the namespace");
            f()
        })
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        // Deleting the namespace takes its veth end (and so the pair) with it.
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}
