//! The part of a replica's data directory that admin clients read: where the admin API
//! listens and the bearer token it wants.
//!
//! ```text
//! DIR/              mode 0700: it holds secrets
//!   api.url         one line, e.g. http://127.0.0.1:9995 (https:// off loopback)
//!   api.token       one line, 64 lowercase hex digits, mode 0600
//!   cluster.secret  one line, 64 lowercase hex digits, mode 0600: what replicas prove to
//!                   each other; admin requests never carry it (`init --join` fetches it
//!                   once, with the admin token, from `GET /v1/cluster-secret`)
//! ```
//!
//! The replica writes both at `meshd controller init` (and again whenever its API address
//! changes); `meshd controller network ... --data DIR` reads them, so an admin on the
//! replica's host needs no flags.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// File holding the admin API's base URL.
pub const API_URL_FILE: &str = "api.url";
/// File holding the admin API's bearer token.
pub const API_TOKEN_FILE: &str = "api.token";
/// File holding the cluster secret.
pub const CLUSTER_SECRET_FILE: &str = "cluster.secret";
/// Bytes of randomness in a token (printed as twice as many hex digits).
pub const TOKEN_BYTES: usize = 32;

const DIR_MODE: u32 = 0o700;
const TOKEN_MODE: u32 = 0o600;
const URL_MODE: u32 = 0o644;

/// Why the API address or token could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "no controller data in {}; run `meshd controller init --data {}` first",
        dir.display(),
        dir.display()
    )]
    Missing { dir: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is damaged: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
}

/// A fresh admin token: 32 bytes from the OS generator, as 64 lowercase hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    // The OS generator does not fail on the systems meshd runs on (Linux >= 3.17); if it
    // did, there would be no safe token to hand out.
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `DIR/api.url` and `DIR/api.token`, creating DIR (mode 0700) if needed.
///
/// Each file is written to a temporary name and renamed into place, so a reader sees the
/// old or the new content, never half a token. The token file is created with mode 0600:
/// it is never readable by others, not even for a moment.
pub fn write_api_info(dir: &Path, url: &str, token: &str) -> Result<(), DataDirError> {
    check_token(token).map_err(|reason| DataDirError::Malformed {
        path: dir.join(API_TOKEN_FILE),
        reason,
    })?;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| DataDirError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(write_err(dir))?;
    write_atomically(&dir.join(API_URL_FILE), url.trim(), URL_MODE)?;
    write_atomically(&dir.join(API_TOKEN_FILE), token, TOKEN_MODE)
}

/// Reads `(url, token)` from DIR.
pub fn read_api_info(dir: &Path) -> Result<(String, String), DataDirError> {
    let url = read_line(dir, API_URL_FILE)?;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(DataDirError::Malformed {
            path: dir.join(API_URL_FILE),
            reason: format!("{url:?} is not an http:// or https:// URL"),
        });
    }
    let token = read_line(dir, API_TOKEN_FILE)?;
    check_token(&token).map_err(|reason| DataDirError::Malformed {
        path: dir.join(API_TOKEN_FILE),
        reason,
    })?;
    Ok((url, token))
}

/// Writes `DIR/cluster.secret` (mode 0600).
pub fn write_cluster_secret(dir: &Path, secret: &str) -> Result<(), DataDirError> {
    let path = dir.join(CLUSTER_SECRET_FILE);
    check_token(secret).map_err(|reason| DataDirError::Malformed {
        path: path.clone(),
        reason,
    })?;
    write_atomically(&path, secret, TOKEN_MODE)
}

/// Reads `DIR/cluster.secret`; `None` when the directory predates it.
pub fn read_cluster_secret(dir: &Path) -> Result<Option<String>, DataDirError> {
    let path = dir.join(CLUSTER_SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim().to_owned();
            check_token(&secret).map_err(|reason| DataDirError::Malformed {
                path,
                reason: format!("{reason}; copy cluster.secret from another replica's directory"),
            })?;
            Ok(Some(secret))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataDirError::Read { path, source }),
    }
}

/// The cluster secret of a cluster initialized before secrets were separate from the admin
/// token: derived from the token every replica shares, so they agree without talking.
pub fn legacy_cluster_secret(token: &str) -> String {
    let mut input = b"meshd cluster secret v1\0".to_vec();
    input.extend_from_slice(token.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn read_line(dir: &Path, name: &str) -> Result<String, DataDirError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().to_owned()),
        // A missing file (or directory) means no replica was initialized here: say how to
        // make one rather than "No such file or directory".
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DataDirError::Missing {
            dir: dir.to_owned(),
        }),
        Err(source) => Err(DataDirError::Read { path, source }),
    }
}

fn check_token(token: &str) -> Result<(), String> {
    let ok = token.len() == 2 * TOKEN_BYTES
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the token must be {} lowercase hex digits",
            2 * TOKEN_BYTES
        ))
    }
}

/// Replaces the text file `path` with `content` and a final newline, atomically and durably
/// ([`meshd_io::fs::write_atomically`]).
pub(crate) fn write_atomically(path: &Path, content: &str, mode: u32) -> Result<(), DataDirError> {
    let text = format!("{content}\n");
    meshd_io::fs::write_atomically(path, text.as_bytes(), mode).map_err(|source| {
        DataDirError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert!(check_token(&a).is_ok(), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn round_trip_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ctl");
        let token = new_token();
        write_api_info(&dir, "http://127.0.0.1:9995", &token).unwrap();
        assert_eq!(
            read_api_info(&dir).unwrap(),
            ("http://127.0.0.1:9995".to_owned(), token.clone())
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(API_TOKEN_FILE)), 0o600);
        assert_eq!(
            fs::read_to_string(dir.join(API_URL_FILE)).unwrap(),
            "http://127.0.0.1:9995\n"
        );

        // Rewriting replaces both files and keeps the token private.
        let token2 = new_token();
        write_api_info(&dir, "http://10.0.0.5:9995", &token2).unwrap();
        assert_eq!(read_api_info(&dir).unwrap().1, token2);
        assert_eq!(mode(&dir.join(API_TOKEN_FILE)), 0o600);
    }

    #[test]
    fn missing_dir_says_how_to_create_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nothing-here");
        let err = read_api_info(&dir).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "no controller data in {0}; run `meshd controller init --data {0}` first",
                dir.display()
            )
        );
    }

    #[test]
    fn damaged_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(API_URL_FILE), "http://127.0.0.1:9995\n").unwrap();
        fs::write(tmp.path().join(API_TOKEN_FILE), "short\n").unwrap();
        let err = read_api_info(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("api.token is damaged"), "{err}");

        fs::write(tmp.path().join(API_URL_FILE), "ftp://x\n").unwrap();
        let err = read_api_info(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not an http:// or https:// URL"), "{err}");

        assert!(write_api_info(tmp.path(), "http://x", "not-a-token").is_err());
    }
}
