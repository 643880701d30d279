//! The options a store is built with: object_store's config keys as the user gives them
//! (`-S KEY=VALUE`), ckpt's retry and timeout settings, and how both are shown without
//! the secrets they may hold.

use std::fmt;
use std::time::Duration;

use object_store::RetryConfig;
use url::Url;

use crate::error::{Error, Result};

/// Options for building a store: object_store config keys (`aws_endpoint`,
/// `aws_allow_http`, `aws_access_key_id`, ...) plus ckpt's own retry settings.
/// Environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) are read first; these override.
#[derive(Clone, Default)]
pub struct StorageOptions {
    /// object_store config keys and values, lowercased keys, in the order given.
    pub options: Vec<(String, String)>,
    /// Retries and timeouts.
    pub retry: RetryOptions,
}

impl fmt::Debug for StorageOptions {
    // Values may be secrets: show the keys only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageOptions")
            .field(
                "keys",
                &self
                    .options
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("retry", &self.retry)
            .finish()
    }
}

/// Retries of transient faults (5xx, connection resets, timeouts), with exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct RetryOptions {
    /// Attempts after the first.
    pub max_retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// The first wait between attempts; it doubles each time, up to 15 s.
    pub init_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            request_timeout: Duration::from_secs(30),
            init_backoff: Duration::from_millis(100),
        }
    }
}

impl StorageOptions {
    /// Parses `KEY=VALUE`; ckpt's own keys are `retry_max`, `retry_timeout` (seconds),
    /// `request_timeout` (seconds), `retry_backoff_ms`.
    pub fn set(&mut self, kv: &str) -> Result<()> {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Error::config(format!(
                "storage option {:?}: expected KEY=VALUE",
                redact_kv(kv)
            ))
        })?;
        let key = k.trim().to_ascii_lowercase();
        let num = |what: &str| -> Result<u64> {
            v.trim().parse().map_err(|_| {
                Error::config(format!(
                    "storage option {key}: {what} must be a whole number"
                ))
            })
        };
        match key.as_str() {
            "retry_max" | "max_retries" => self.retry.max_retries = num("retry_max")? as usize,
            "retry_timeout" => {
                self.retry.retry_timeout = Duration::from_secs(num("retry_timeout")?)
            }
            "request_timeout" | "timeout" => {
                self.retry.request_timeout = Duration::from_secs(num("request_timeout")?)
            }
            "retry_backoff_ms" => {
                self.retry.init_backoff = Duration::from_millis(num("retry_backoff_ms")?)
            }
            _ => self.options.push((key, v.to_owned())),
        }
        Ok(())
    }

    pub(super) fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.retry.max_retries,
            retry_timeout: self.retry.retry_timeout,
            backoff: object_store::BackoffConfig {
                init_backoff: self.retry.init_backoff,
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
        }
    }

    /// The user's options after ckpt's timeout defaults, as config keys: applying options
    /// one by one keeps `allow_http` and friends (a whole `ClientOptions` would reset them).
    pub(super) fn with_timeouts(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "timeout".to_owned(),
                format!("{}ms", self.retry.request_timeout.as_millis()),
            ),
            ("connect_timeout".to_owned(), "10s".to_owned()),
        ];
        v.extend(self.options.iter().cloned());
        v
    }
}

fn redact_kv(kv: &str) -> String {
    match kv.split_once('=') {
        Some((k, _)) => format!("{k}=***"),
        // Without '=' this may be a value given alone (`-S <secret>`): show it only when it
        // looks like an option key.
        None if kv.len() <= 64
            && kv
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
        {
            kv.to_owned()
        }
        None => "*** (not shown: it may be a secret)".to_owned(),
    }
}

/// Shows a URL without any password or query (which may hold a signature or token).
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        u.set_query(Some("***"));
    }
    u.to_string()
}
