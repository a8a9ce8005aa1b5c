//! The node's state directory: its identity, the networks it joined and the last verified
//! config of each, so that a restarted daemon rejoins them even when no controller answers.
//!
//! ```text
//! DIR/                      mode 0700 (default /var/lib/meshd, or --state / MESHD_STATE)
//!   identity.secret         mode 0600: `<node id>:<x25519 secret><ed25519 seed>` in hex
//!   daemon.lock             locked (flock) by the daemon running on DIR
//!   meshd.sock              the local API (HTTP+JSON), mode 0600; see `api`
//!   controllers.json        mode 0600: the replicas each user-given controller address led
//!                           to: {"learned": {"HOST:PORT": ["HOST:PORT", ...]}}
//!   networks/               mode 0700
//!     <nwid>.json           {"controllers": ["HOST:PORT", ...], "joined_at": <unix seconds>}
//!     <nwid>.config         the last verified signed config, as the controller sent it
//! ```
//!
//! Every file is written to a temporary name, synced and renamed into place, so a crash
//! leaves the old or the new content, never half of one. Cached configs are verified again
//! when loaded: the directory is trusted to keep them, not to vouch for them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, Permissions, TryLockError};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use meshd_io::fs::{sync_dir, write_atomically};
use meshd_proto::{Identity, NetworkConfig, NetworkId, SignedConfig};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::controller_link::ControllerAddr;

pub const IDENTITY_FILE: &str = "identity.secret";
pub const SOCKET_FILE: &str = "meshd.sock";
pub const LOCK_FILE: &str = "daemon.lock";
pub const NETWORKS_DIR: &str = "networks";
pub const CONTROLLERS_FILE: &str = "controllers.json";
/// The replicas' keys pinned at first contact ([`super::pins`]).
pub const PINS_FILE: &str = "replica-keys.json";

const DIR_MODE: u32 = 0o700;
/// Most learned replicas kept per controller address (what one `Replicas` message may hold).
const MAX_LEARNED_PER_ADDRESS: usize = meshd_channel::protocol::MAX_REPLICAS;
const SECRET_MODE: u32 = 0o600;

/// Where the daemon of state directory `dir` serves its local API.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_FILE)
}

/// What `networks/<nwid>.json` holds about a joined network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The controller replicas to ask, in order. Empty: the daemon's `--controller` list.
    #[serde(default)]
    pub controllers: Vec<ControllerAddr>,
    /// When the network was first joined, in seconds since the Unix epoch.
    pub joined_at: u64,
}

/// What `controllers.json` holds: the controller replicas learned from controllers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedControllers {
    /// For each controller address the user gave, the node-channel addresses of every
    /// replica its controller reported, as reported.
    #[serde(default)]
    pub learned: BTreeMap<ControllerAddr, Vec<ControllerAddr>>,
}

/// A joined network as found in the state directory.
#[derive(Debug, Clone)]
pub struct SavedNetwork {
    pub id: NetworkId,
    pub record: NetworkRecord,
    /// The cached config with its signature verified, if there is a usable one.
    pub config: Option<NetworkConfig>,
}

/// An open state directory, locked for one daemon.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    identity: Identity,
    /// Held for as long as the daemon runs; the OS drops the lock with the process.
    _lock: File,
}

impl StateDir {
    /// Opens (creating if needed) the state directory `dir`, locks it, and loads the node's
    /// identity, creating one on first use.
    ///
    /// Fails when another daemon holds the directory, or when the identity file exists but
    /// cannot be read: it is never replaced silently, since that would change the node id.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        create_private_dir(dir)?;
        create_private_dir(&dir.join(NETWORKS_DIR))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(SECRET_MODE)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "another meshd daemon is running with the state directory {}; stop it, or give \
                 this one its own --state DIR",
                dir.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        let identity = load_or_create_identity(&dir.join(IDENTITY_FILE))?;
        Ok(Self {
            dir: dir.to_owned(),
            identity,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.dir)
    }

    /// Every joined network, sorted by id. Damaged records are skipped with a warning;
    /// a cached config that does not verify is ignored (the network is asked for again).
    /// Leftovers of interrupted writes and leaves are removed.
    /// The joined networks. A record that cannot be read is an error that names the file:
    /// skipping it would silently stop the node from rejoining its network.
    pub fn load_networks(&self) -> anyhow::Result<Vec<SavedNetwork>> {
        let dir = self.dir.join(NETWORKS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => anyhow::bail!("cannot list the joined networks in {}: {e}", dir.display()),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else {
                // A config whose record is gone is what an interrupted leave leaves behind.
                if let Some(stem) = name.strip_suffix(".config")
                    && !dir.join(format!("{stem}.json")).exists()
                {
                    let _ = fs::remove_file(&path);
                }
                continue;
            };
            let Ok(id) = stem.parse::<NetworkId>() else {
                warn!(file = %path.display(), "not a network record (the name is no network id); ignored");
                continue;
            };
            let record = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<NetworkRecord>(&b).map_err(|e| e.to_string())
                })
                .map_err(|error| {
                    anyhow::anyhow!(
                        "the record of network {id} ({}) is damaged: {error}; restore it, or \
                         remove it and join again (`meshd join {id}`)",
                        path.display()
                    )
                })?;
            let config = self.load_config(id);
            out.push(SavedNetwork { id, record, config });
        }
        out.sort_by_key(|n| n.id);
        Ok(out)
    }

    fn load_config(&self, id: NetworkId) -> Option<NetworkConfig> {
        let path = self.config_path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read the cached config");
                return None;
            }
        };
        match SignedConfig::from_bytes(bytes).verify(id) {
            Ok(cfg) => Some(cfg),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cached config does not verify; ignored");
                None
            }
        }
    }

    /// The learned controller replicas; none when the file is missing or damaged (they are
    /// learned again at the next connection).
    pub fn load_learned_controllers(&self) -> LearnedControllers {
        let path = self.dir.join(CONTROLLERS_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return LearnedControllers::default(),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "cannot read the learned controllers");
                return LearnedControllers::default();
            }
        };
        match serde_json::from_slice::<LearnedControllers>(&bytes) {
            Ok(mut learned) => {
                for replicas in learned.learned.values_mut() {
                    replicas.truncate(MAX_LEARNED_PER_ADDRESS);
                }
                learned
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "damaged list of learned controllers; ignored");
                LearnedControllers::default()
            }
        }
    }

    /// Writes `controllers.json`.
    pub fn save_learned_controllers(&self, learned: &LearnedControllers) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(learned).map_err(io::Error::other)?;
        write_atomically(&self.dir.join(CONTROLLERS_FILE), &json, SECRET_MODE)
    }

    /// The pinned replica keys; none before the first contact. A damaged file is an error:
    /// forgetting pins would hand the node to whoever answers next.
    pub fn load_pins(&self) -> anyhow::Result<super::pins::ReplicaPins> {
        let path = self.dir.join(PINS_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; restore it, or remove it to trust the replicas that answer next",
                    path.display()
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save_pins(&self, pins: &super::pins::ReplicaPins) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(pins).map_err(io::Error::other)?;
        write_atomically(&self.dir.join(PINS_FILE), &json, SECRET_MODE)
    }

    /// Writes `networks/<nwid>.json`.
    pub fn save_record(&self, id: NetworkId, record: &NetworkRecord) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        write_atomically(&self.record_path(id), &json, SECRET_MODE)
    }

    /// Writes `networks/<nwid>.config`.
    pub fn save_config(&self, id: NetworkId, signed: &SignedConfig) -> io::Result<()> {
        write_atomically(&self.config_path(id), signed.as_bytes(), SECRET_MODE)
    }

    /// Forgets a network: its record first, so that an interrupted removal leaves an orphan
    /// config (cleaned up at the next start), never a record pointing at nothing.
    pub fn remove_network(&self, id: NetworkId) -> io::Result<()> {
        for path in [self.record_path(id), self.config_path(id)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        sync_dir(&self.dir.join(NETWORKS_DIR))
    }

    /// Forgets a network's cached config (the network is gone), keeping its record.
    pub fn remove_config(&self, id: NetworkId) -> io::Result<()> {
        match fs::remove_file(self.config_path(id)) {
            Ok(()) => sync_dir(&self.dir.join(NETWORKS_DIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn record_path(&self, id: NetworkId) -> PathBuf {
        self.dir.join(NETWORKS_DIR).join(format!("{id}.json"))
    }

    fn config_path(&self, id: NetworkId) -> PathBuf {
        self.dir.join(NETWORKS_DIR).join(format!("{id}.config"))
    }
}

/// Creates `dir` if needed and makes it private to its owner (it holds secrets).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))
}

fn load_or_create_identity(path: &Path) -> anyhow::Result<Identity> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let identity = match Identity::from_secret_text(&text) {
                Ok(identity) => identity,
                Err(e @ meshd_proto::identity::KeyError::MadeWithoutProofOfWork { .. }) => {
                    anyhow::bail!("{}: {e}", path.display())
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "the identity in {} is damaged; restore it from a backup, or move \
                             it away to start with a new identity (a new node id that must be \
                             authorized again)",
                            path.display()
                        )
                    });
                }
            };
            let mode = fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "the identity was readable by others; making it private (0600)");
                fs::set_permissions(path, Permissions::from_mode(SECRET_MODE))
                    .with_context(|| format!("cannot make {} private", path.display()))?;
            }
            Ok(identity)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let identity = Identity::generate();
            let text = identity.to_secret_text();
            write_atomically(path, format!("{}\n", text.as_str()).as_bytes(), SECRET_MODE)
                .with_context(|| format!("cannot write {}", path.display()))?;
            info!(node = %identity.node_id(), file = %path.display(), "created a new identity");
            Ok(identity)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use meshd_proto::NetworkKey;

    use super::*;
    use crate::daemon::test_support::signed_config;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn open_creates_a_private_directory_and_a_stable_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let first = StateDir::open(&dir).unwrap();
        let node = first.identity().node_id();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(NETWORKS_DIR)), 0o700);
        assert_eq!(mode(&dir.join(IDENTITY_FILE)), 0o600);
        let text = fs::read_to_string(dir.join(IDENTITY_FILE)).unwrap();
        assert!(text.starts_with(&format!("{node}:")));
        drop(first);
        let again = StateDir::open(&dir).unwrap();
        assert_eq!(
            again.identity().node_id(),
            node,
            "the identity is loaded, not replaced"
        );
    }

    #[test]
    fn a_second_daemon_on_the_same_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = StateDir::open(tmp.path()).unwrap();
        let err = StateDir::open(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("another meshd daemon"), "{err}");
    }

    #[test]
    fn a_damaged_identity_is_an_error_and_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(IDENTITY_FILE), "garbage").unwrap();
        let err = format!("{:#}", StateDir::open(tmp.path()).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
        assert_eq!(
            fs::read_to_string(tmp.path().join(IDENTITY_FILE)).unwrap(),
            "garbage"
        );
    }

    #[test]
    fn an_identity_readable_by_others_is_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(IDENTITY_FILE);
        let id = Identity::generate();
        fs::write(&path, id.to_secret_text().as_str()).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        assert_eq!(state.identity().node_id(), id.node_id());
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn learned_controllers_round_trip_privately_and_damage_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        assert_eq!(
            state.load_learned_controllers(),
            LearnedControllers::default()
        );
        let addr = |s: &str| s.parse::<ControllerAddr>().unwrap();
        let learned = LearnedControllers {
            learned: BTreeMap::from([(
                addr("ctl.example.com:9994"),
                vec![addr("10.0.0.1:9994"), addr("[fd00::2]:9994")],
            )]),
        };
        state.save_learned_controllers(&learned).unwrap();
        let path = tmp.path().join(CONTROLLERS_FILE);
        assert_eq!(mode(&path), 0o600);
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"learned": {"ctl.example.com:9994": ["10.0.0.1:9994", "[fd00::2]:9994"]}})
        );
        assert_eq!(state.load_learned_controllers(), learned);

        // Too many (by hand): cut to what a controller may report.
        let many: Vec<String> = (0..40).map(|i| format!("10.0.1.{i}:9994")).collect();
        let text = serde_json::json!({"learned": {"a:1": many}}).to_string();
        fs::write(&path, text).unwrap();
        let loaded = state.load_learned_controllers();
        assert_eq!(loaded.learned[&addr("a:1")].len(), MAX_LEARNED_PER_ADDRESS);

        for damaged in ["{", r#"{"learned": {"a:1": ["not an address"]}}"#] {
            fs::write(&path, damaged).unwrap();
            assert_eq!(
                state.load_learned_controllers(),
                LearnedControllers::default()
            );
        }
    }

    #[test]
    fn networks_round_trip_and_bad_configs_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let (key, cfg, signed) = signed_config(7, 3);
        let nwid = key.network_id();
        let record = NetworkRecord {
            controllers: vec!["ctl.example.com:9994".parse().unwrap()],
            joined_at: 1_700_000_000,
        };
        state.save_record(nwid, &record).unwrap();
        state.save_config(nwid, &signed).unwrap();
        assert_eq!(
            mode(&tmp.path().join("networks").join(format!("{nwid}.config"))),
            0o600
        );
        let loaded = state.load_networks().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, nwid);
        assert_eq!(loaded[0].record, record);
        assert_eq!(loaded[0].config.as_ref(), Some(&cfg));

        // A config of another network stored under this id does not verify: dropped.
        let (_, _, other) = signed_config(8, 9);
        state.save_config(nwid, &other).unwrap();
        let loaded = state.load_networks().unwrap();
        assert!(loaded[0].config.is_none());

        // Orphans and temp files are cleaned up, names that are no network id skipped.
        let other_id = NetworkKey::from_seed(&[8; 32]).unwrap().network_id();
        let nets = tmp.path().join("networks");
        fs::write(nets.join(format!("{other_id}.config")), b"x").unwrap();
        fs::write(nets.join("0123456789abcdef.json.tmp"), b"x").unwrap();
        fs::write(nets.join("notes.json"), b"{}").unwrap();
        let loaded = state.load_networks().unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(!nets.join(format!("{other_id}.config")).exists());
        assert!(!nets.join("0123456789abcdef.json.tmp").exists());
        // A damaged record is an error that names the file, and the file stays.
        let damaged = nets.join("0123456789abcdef.json");
        fs::write(&damaged, b"{").unwrap();
        let error = state.load_networks().unwrap_err().to_string();
        assert!(error.contains("0123456789abcdef.json"), "{error}");
        assert!(error.contains("is damaged"), "{error}");
        assert!(damaged.exists());
        fs::remove_file(&damaged).unwrap();

        state.remove_network(nwid).unwrap();
        assert!(!nets.join(format!("{nwid}.json")).exists());
        assert!(!nets.join(format!("{nwid}.config")).exists());
        state.remove_network(nwid).unwrap();
        assert!(state.load_networks().unwrap().is_empty());
    }
}
