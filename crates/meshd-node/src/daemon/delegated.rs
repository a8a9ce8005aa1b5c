//! The global IPv6 prefix delegated to this host (DHCPv6-PD: a /60 or /56 from its
//! provider), which the member's container /80 comes from: given once
//! (`meshd daemon --ipv6-prefix 2001:db8:1:40::/60`) or read from a file a DHCP client hook
//! writes (`--ipv6-prefix-file`), checked every [`WATCH_INTERVAL`]. The node reports it with
//! each network's report; a change is reported at once, the controller moves the member's
//! container route, and every peer follows with the next config.
//!
//! The file holds the prefix on its first line that is not empty or a `#` comment; an empty
//! file means no prefix (the member's containers go back to 6PLANE). A file that cannot be
//! read or parsed keeps the last good prefix, and `meshd status` says why.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Daemon;

/// How often the prefix file is read.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the prefix comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixSource {
    Fixed(Ipv6Net),
    File(PathBuf),
}

/// `meshd status`'s view of the delegated prefix (`"delegated_prefix"` in `--json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixView {
    pub prefix: Option<Ipv6Net>,
    /// The file it is read from, if any.
    pub file: Option<PathBuf>,
    /// Why the file's content is not used (the last good prefix stays).
    pub error: Option<String>,
}

/// The prefix now, shared by the watcher and the reports.
#[derive(Debug, Default)]
pub struct DelegatedPrefix {
    view: Mutex<PrefixView>,
}

impl DelegatedPrefix {
    pub fn new(source: Option<&PrefixSource>) -> Self {
        let view = match source {
            None => PrefixView::default(),
            Some(PrefixSource::Fixed(p)) => PrefixView {
                prefix: Some(*p),
                ..PrefixView::default()
            },
            Some(PrefixSource::File(path)) => PrefixView {
                file: Some(path.clone()),
                ..PrefixView::default()
            },
        };
        let prefix = Self {
            view: Mutex::new(view),
        };
        prefix.reload();
        prefix
    }

    pub fn prefix(&self) -> Option<Ipv6Net> {
        self.lock().prefix
    }

    pub fn view(&self) -> Option<PrefixView> {
        let view = self.lock().clone();
        (view != PrefixView::default()).then_some(view)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PrefixView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the file again, if the prefix comes from one; whether the prefix changed.
    pub fn reload(&self) -> bool {
        let Some(path) = self.lock().file.clone() else {
            return false;
        };
        let read = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| parse(&text).map_err(|e| format!("{}: {e}", path.display())));
        let mut view = self.lock();
        match read {
            Ok(prefix) => {
                let changed = view.prefix != prefix;
                if changed {
                    info!(?prefix, file = %path.display(), "delegated prefix changed");
                }
                view.prefix = prefix;
                view.error = None;
                changed
            }
            Err(e) => {
                if view.error.as_ref() != Some(&e) {
                    warn!(error = %e, "delegated prefix file not used; keeping the last good prefix");
                }
                view.error = Some(e);
                false
            }
        }
    }
}

/// The prefix a file's text names: its first line that is not empty or a comment; none
/// for a file without one.
pub fn parse(text: &str) -> Result<Option<Ipv6Net>, String> {
    let Some(line) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        return Ok(None);
    };
    let prefix: Ipv6Net = line.parse().map_err(|_| {
        format!("{line:?} is not an IPv6 prefix; write one like 2001:db8:1:40::/60")
    })?;
    check(prefix).map(Some)
}

/// What a delegated prefix must be, said the way a user can fix it.
pub fn check(prefix: Ipv6Net) -> Result<Ipv6Net, String> {
    if prefix.trunc() != prefix {
        return Err(format!(
            "{prefix} has host bits set; did you mean {}?",
            prefix.trunc()
        ));
    }
    if prefix.prefix_len() > 80 {
        return Err(format!(
            "{prefix} is longer than the /80 containers need; give the delegated prefix itself \
             (e.g. a /60 or /56)"
        ));
    }
    Ok(prefix)
}

/// Reads the prefix file every [`WATCH_INTERVAL`] until the daemon stops; the links report
/// a change at their next check (within a second).
pub(super) async fn watch(daemon: Arc<Daemon>) {
    let mut stop = daemon.stop.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let prefix = Arc::clone(&daemon.delegated);
        if let Err(e) = tokio::task::spawn_blocking(move || prefix.reload()).await {
            warn!(error = %e, "reading the delegated prefix file did not finish");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn files_name_one_prefix_or_none() {
        assert_eq!(
            parse("# from dhclient\n\n 2001:db8:1:40::/60 \n2001:db8:9::/48\n").unwrap(),
            Some("2001:db8:1:40::/60".parse().unwrap())
        );
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# withdrawn\n").unwrap(), None);
        for (bad, says) in [
            ("2001:db8:1:41::/60", "did you mean 2001:db8:1:40::/60"),
            ("2001:db8:1:40::/96", "longer than the /80"),
            ("10.0.0.0/8", "not an IPv6 prefix"),
            ("garbage", "not an IPv6 prefix"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_files_never_panic(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }
    }

    #[test]
    fn a_bad_file_keeps_the_last_good_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefix");
        std::fs::write(&path, "2001:db8:1:40::/60\n").unwrap();
        let p = DelegatedPrefix::new(Some(&PrefixSource::File(path.clone())));
        assert_eq!(p.prefix(), Some("2001:db8:1:40::/60".parse().unwrap()));
        assert!(!p.reload());
        std::fs::write(&path, "oops\n").unwrap();
        assert!(!p.reload());
        let view = p.view().unwrap();
        assert_eq!(view.prefix, Some("2001:db8:1:40::/60".parse().unwrap()));
        assert!(view.error.unwrap().contains("not an IPv6 prefix"));
        std::fs::write(&path, "2001:db8:2:80::/60\n").unwrap();
        assert!(p.reload());
        assert_eq!(p.prefix(), Some("2001:db8:2:80::/60".parse().unwrap()));
        assert_eq!(p.view().unwrap().error, None);
        std::fs::remove_file(&path).unwrap();
        assert!(!p.reload());
        assert!(p.view().unwrap().error.unwrap().contains("cannot read"));
        // Fixed and absent prefixes.
        let fixed =
            DelegatedPrefix::new(Some(&PrefixSource::Fixed("2001:db8::/56".parse().unwrap())));
        assert!(!fixed.reload());
        assert_eq!(fixed.prefix(), Some("2001:db8::/56".parse().unwrap()));
        assert_eq!(DelegatedPrefix::new(None).view(), None);
    }
}
