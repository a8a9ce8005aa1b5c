//! How the admin commands (`network`, `member`, `route`, `replica`) reach a replica's admin
//! API: the connection options and one call run to completion.
//!
//! Values the user typed are checked before anything is sent, with the same parsers the
//! API uses, so a bad CIDR fails the same way with or without a reachable controller.
//! API errors are printed as the server worded them.

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use meshd_controller::admin_client::AdminClient;
use meshd_controller::api_tls::ApiFingerprint;
use meshd_controller::datadir;

/// How admin commands reach the controller's HTTP API.
///
/// The options are global: they may come before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of any replica's admin API, e.g. http://10.0.0.5:9995.
    /// Default: the address in --data
    #[arg(long, value_name = "URL", env = "MESHD_API", global = true)]
    pub api: Option<String>,

    /// Bearer token for the admin API. Default: the token in --data
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MESHD_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,

    /// Data directory of a replica on this host; the API address, token and certificate
    /// are read from it (--api, --token and --fingerprint override them). Default: none
    #[arg(long, value_name = "DIR", global = true)]
    pub data: Option<PathBuf>,

    /// For an https:// API: the SHA-256 fingerprint of the replica's certificate, as
    /// `meshd controller init` and `run` print it; no other certificate is trusted.
    /// Default: the certificate in --data
    #[arg(
        long,
        value_name = "sha256:HEX",
        env = "MESHD_API_FINGERPRINT",
        global = true
    )]
    pub fingerprint: Option<String>,
}

/// Connects as `api` says and runs one call to completion.
pub(super) fn run<T, F, Fut>(api: &ApiArgs, call: F) -> anyhow::Result<T>
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: Future<Output = Result<T, meshd_controller::admin_client::ClientError>>,
{
    let client = client(api)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(call(client))?)
}

/// The client for --api/--token (or MESHD_API/MESHD_TOKEN), falling back to what the
/// replica wrote into --data.
fn client(api: &ApiArgs) -> anyhow::Result<AdminClient> {
    let fingerprint = api
        .fingerprint
        .as_deref()
        .map(|f| f.parse::<ApiFingerprint>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("--fingerprint: {e}"))?;
    let (url, token, data_fingerprint) = match (&api.api, &api.token, &api.data) {
        (Some(url), Some(token), _) => (url.clone(), token.clone(), None),
        (url, token, Some(dir)) => {
            let from_dir = AdminClient::from_data_dir(dir)?;
            let (data_url, data_token) = datadir::read_api_info(dir)?;
            // The directory's certificate vouches for the directory's own API only.
            let data_fingerprint = match url {
                Some(url) if url.trim_end_matches('/') != data_url => None,
                _ => from_dir.fingerprint(),
            };
            (
                url.clone().unwrap_or(data_url),
                token.clone().unwrap_or(data_token),
                data_fingerprint,
            )
        }
        (None, _, None) => anyhow::bail!(
            "no controller API given; pass --api URL --token TOKEN (or set MESHD_API and \
             MESHD_TOKEN), or --data DIR on a replica's host"
        ),
        (Some(_), None, None) => anyhow::bail!(
            "no admin API token given; pass --token TOKEN or set MESHD_TOKEN (it is in \
             DIR/api.token on the replica's host)"
        ),
    };
    let client = AdminClient::new(url, token)?;
    Ok(match fingerprint.or(data_fingerprint) {
        Some(fingerprint) => client.pinned(fingerprint),
        None => client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_comes_from_flags_or_the_data_dir() {
        let none = ApiArgs {
            api: None,
            token: None,
            data: None,
            fingerprint: None,
        };
        assert!(
            client(&none)
                .unwrap_err()
                .to_string()
                .starts_with("no controller API given")
        );
        let no_token = ApiArgs {
            api: Some("http://127.0.0.1:9995".into()),
            ..none.clone()
        };
        assert!(
            client(&no_token)
                .unwrap_err()
                .to_string()
                .contains("--token")
        );

        let tmp = tempfile::tempdir().unwrap();
        let token = datadir::new_token();
        datadir::write_api_info(tmp.path(), "http://127.0.0.1:9995", &token).unwrap();
        let from_data = ApiArgs {
            data: Some(tmp.path().to_owned()),
            ..none.clone()
        };
        assert_eq!(client(&from_data).unwrap().base(), "http://127.0.0.1:9995");
        let overridden = ApiArgs {
            api: Some("http://10.0.0.5:9995".into()),
            ..from_data
        };
        assert_eq!(client(&overridden).unwrap().base(), "http://10.0.0.5:9995");

        let empty = tempfile::tempdir().unwrap();
        let e = client(&ApiArgs {
            data: Some(empty.path().to_owned()),
            ..none
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("no controller data in"), "{e}");
    }
}
