//! The error type of the DataFusion-free layers (codec, kinds, names, storage). Every
//! message says what failed, where (file, line, field or column), and — where there is
//! one — what to do next. The engine (`ckpt::Error`) wraps it and adds DataFusion's.
//!
//! Storage errors are classified by object_store's variants (`NotFound`,
//! `PermissionDenied`, `Unauthenticated`, ...) and by the `std::io::ErrorKind` found in
//! their cause chain, never by searching their text.
//!
//! A server's error body may echo the request it refused, signature, key id and session
//! token included (S3's `SignatureDoesNotMatch` does, and so do some proxies' error
//! pages); object_store puts that body in its error. So every error that can carry text
//! from a server (storage, I/O, Arrow, Parquet) passes through [`redact_secrets`] when it
//! is made: its message, `Debug` and cause chain never hold such material.

use std::fmt;

/// Where in a checkpoint a problem was found: `summaries.jsonl:17: concerning_score`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file (its name within the root, or a URL).
    pub file: String,
    /// 1-based line number for JSONL; `None` for Parquet.
    pub line: Option<u64>,
    /// The field or column, when known.
    pub field: Option<String>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A checkpoint's content does not match its kind: bad JSON, wrong type, missing field.
    #[error("{position}: {message}")]
    Data { position: Position, message: String },

    /// A checkpoint name or target that is not allowed (escapes the root, NUL, too long).
    #[error("invalid checkpoint name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    /// A root, URL or storage option that cannot be used.
    #[error("{0}")]
    Config(String),

    /// The storage layer failed; `context` names the location, `hint` the likely fix.
    #[error("{context}: {source}{}", hint.as_deref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Storage {
        context: String,
        #[source]
        source: object_store::Error,
        hint: Option<String>,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Arrow(arrow::error::ArrowError),

    #[error(transparent)]
    Parquet(parquet::errors::ParquetError),

    /// A file was replaced (saved again) while it was being read: the read stopped
    /// rather than mix two versions. Reading it again gives the new version.
    #[error("{file} changed while it was being read (saved again meanwhile); read it again")]
    ChangedWhileRead { file: String },

    /// The checkpoint was made from other inputs than the caller's: the fingerprint
    /// recorded with it (inputs, model, prompt, parameters, as the caller computes it) is
    /// not the one expected, or none was recorded.
    #[error(
        "{file} is stale: it was made with fingerprint {}, not {expected:?}; delete it (or load it without a fingerprint) to use it",
        recorded.as_deref().map_or("(none recorded)".to_owned(), |r| format!("{r:?}"))
    )]
    Stale {
        file: String,
        recorded: Option<String>,
        expected: String,
    },

    /// A bug or a lost worker thread, not a problem with the input: a decode task that
    /// panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn data(
        file: impl Into<String>,
        line: Option<u64>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Error::Data {
            position: Position {
                file: file.into(),
                line,
                field: field.map(str::to_owned),
            },
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    pub fn invalid_name(name: &str, reason: impl Into<String>) -> Self {
        Error::InvalidName {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// An I/O failure; one that carries a server's answer (an upload's, through
    /// object_store) is kept without any credentials the answer echoed.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: redact_io(source),
        }
    }

    /// Wraps an object_store error with the location it concerns and a hint for the
    /// common misconfigurations. Any request credentials the server's answer echoed are
    /// removed from it (see [`redact_secrets`]).
    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        let hint = storage_hint(&source).map(str::to_owned);
        Error::Storage {
            context: context.into(),
            source: redact_object_store(source),
            hint,
        }
    }

    /// Whether a read stopped because a concurrent save replaced the file.
    pub fn is_changed_while_read(&self) -> bool {
        matches!(self, Error::ChangedWhileRead { .. })
    }

    /// Whether a checkpoint was made from other inputs (its fingerprint differs).
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::Stale { .. })
    }

    /// Whether this is a storage error saying the object (or its bucket) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// The position, when this is a data error.
    pub fn position(&self) -> Option<&Position> {
        match self {
            Error::Data { position, .. } => Some(position),
            _ => None,
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        if chain_has_secrets(&e) {
            let text = Redacted::of(&e);
            return Error::Arrow(arrow::error::ArrowError::ExternalError(Box::new(text)));
        }
        Error::Arrow(e)
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        if chain_has_secrets(&e) {
            let text = Redacted::of(&e);
            return Error::Parquet(parquet::errors::ParquetError::External(Box::new(text)));
        }
        Error::Parquet(e)
    }
}

/// What to do next, by the kind of storage failure.
fn storage_hint(err: &object_store::Error) -> Option<&'static str> {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => Some(
            "no such object: check the path, or for a bucket URL the bucket name (it must exist)",
        ),
        E::PermissionDenied { .. } => Some(
            "the server refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or --storage-option aws_access_key_id=...) and the bucket's policy",
        ),
        E::Unauthenticated { .. } => Some(
            "no valid credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --storage-option",
        ),
        E::UnknownConfigurationKey { .. } => {
            Some("see `ckpt --help` for the storage option keys of each store")
        }
        _ => match io_kind(err)? {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::AddrNotAvailable => Some(
                "the endpoint cannot be reached: check AWS_ENDPOINT_URL / --storage-option aws_endpoint=..., and aws_allow_http=true for http:// endpoints",
            ),
            _ => None,
        },
    }
}

/// The kind of the first `std::io::Error` in an error's cause chain (a refused connection
/// sits a few layers below object_store's error).
fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = e.source();
    }
    None
}

/// Header fields and parameters whose value is a credential or proves one: shown as
/// `***`. As a header (`Authorization: ...`, up to the end of its line) or a parameter
/// (`Signature=...`, up to the next separator), in any letter case.
const SECRET_FIELDS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-amz-security-token",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-signature",
    "x-amz-credential",
    "x-goog-signature",
    "x-goog-credential",
    "x-ms-encryption-key",
    "signature",
    "credential",
    "sig",
];

/// XML elements of S3 error bodies that hold the signature sent, the key id, or the
/// signed request itself (whose headers include any session token, also hex-encoded).
const SECRET_ELEMENTS: &[&str] = &[
    "signatureprovided",
    "awsaccesskeyid",
    "stringtosign",
    "stringtosignbytes",
    "canonicalrequest",
    "canonicalrequestbytes",
];

const REDACTED: &str = "***";

/// `text` with every credential a server may echo replaced by `***`: the values of
/// `Authorization`, `X-Amz-Security-Token` and similar headers, of `Signature=`,
/// `Credential=` (the access key id and its scope) and presigned-URL parameters, and the
/// content of S3's `<SignatureProvided>`, `<AWSAccessKeyId>`, `<StringToSign>` and
/// `<CanonicalRequest>` elements. Everything else is kept, so the message still says
/// what failed (`403 Forbidden`, `AccessDenied`, the bucket and key).
pub fn redact_secrets(text: &str) -> std::borrow::Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    let (b, l) = (text.as_bytes(), lower.as_bytes());
    let mut out = String::new();
    // Text before `copied` is in `out` already.
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let found = if l[i] == b'<' {
            secret_element(l, i)
        } else if i == 0 || !is_name_byte(l[i - 1]) {
            secret_field(l, i)
        } else {
            None
        };
        match found {
            Some((start, end)) => {
                out.push_str(&text[copied..start]);
                out.push_str(REDACTED);
                copied = end;
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// The value's byte range when a secret field starts at `i` of the lowercased text.
fn secret_field(l: &[u8], i: usize) -> Option<(usize, usize)> {
    let field = SECRET_FIELDS
        .iter()
        .find(|f| l[i..].starts_with(f.as_bytes()))?;
    let mut j = i + field.len();
    // `"authorization": "..."` (JSON) as well as `Authorization: ...` and `Signature=...`.
    if matches!(l.get(j), Some(b'"' | b'\'')) {
        j += 1;
    }
    while l.get(j) == Some(&b' ') {
        j += 1;
    }
    let header = match l.get(j) {
        Some(b':') => true,
        Some(b'=') => false,
        _ => return None,
    };
    j += 1;
    while l.get(j) == Some(&b' ') {
        j += 1;
    }
    let (start, end) = match l.get(j) {
        // A quoted value: what the quotes enclose.
        Some(q @ (b'"' | b'\'')) => {
            let close = l[j + 1..].iter().position(|c| c == q || *c == b'\n');
            (j + 1, j + 1 + close.unwrap_or(l.len() - j - 1))
        }
        _ => {
            let stop = |c: &u8| {
                matches!(c, b'\r' | b'\n' | b'<')
                    || (!header && matches!(c, b'&' | b',' | b';' | b' ' | b'"' | b'\''))
            };
            (j, j + l[j..].iter().position(stop).unwrap_or(l.len() - j))
        }
    };
    (end > start && &l[start..end] != REDACTED.as_bytes()).then_some((start, end))
}

/// The content's byte range when a secret element opens at `i` of the lowercased text.
fn secret_element(l: &[u8], i: usize) -> Option<(usize, usize)> {
    let name = SECRET_ELEMENTS
        .iter()
        .find(|e| l[i + 1..].starts_with(e.as_bytes()) && l.get(i + 1 + e.len()) == Some(&b'>'))?;
    let start = i + 2 + name.len();
    let end = start
        + l[start..]
            .iter()
            .position(|c| *c == b'<')
            .unwrap_or(l.len() - start);
    (end > start && &l[start..end] != REDACTED.as_bytes()).then_some((start, end))
}

/// Whether the message of `e` or of any error in its cause chain holds a credential.
fn chain_has_secrets(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if matches!(redact_secrets(&err.to_string()), std::borrow::Cow::Owned(_)) {
            return true;
        }
        // `io::Error::source` skips the error it wraps: look at that one too.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && matches!(
                redact_secrets(&inner.to_string()),
                std::borrow::Cow::Owned(_)
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The message of an error that held credentials, without them. It replaces the error
/// (and its cause chain, whose messages its own message repeats).
#[derive(Debug)]
pub struct Redacted(String);

impl Redacted {
    fn of(e: &dyn std::error::Error) -> Redacted {
        Redacted(redact_secrets(&e.to_string()).into_owned())
    }

    /// The redacted message of `e`, when `e` or an error in its cause chain holds
    /// credentials; `None` when it can be shown as it is.
    pub fn needed(e: &(dyn std::error::Error + 'static)) -> Option<Redacted> {
        chain_has_secrets(e).then(|| Redacted::of(e))
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

/// `e` unchanged, or, when its messages hold credentials, the same variant (so the hints
/// and `is_not_found` still see what failed) around the redacted message.
fn redact_object_store(e: object_store::Error) -> object_store::Error {
    use object_store::Error as E;
    if !chain_has_secrets(&e) {
        return e;
    }
    type Source = Box<dyn std::error::Error + Send + Sync + 'static>;
    let clean = |s: Source| -> Source { Box::new(Redacted::of(&*s)) };
    match e {
        E::Generic { store, source } => E::Generic {
            store,
            source: clean(source),
        },
        E::NotFound { path, source } => E::NotFound {
            path,
            source: clean(source),
        },
        E::NotSupported { source } => E::NotSupported {
            source: clean(source),
        },
        E::AlreadyExists { path, source } => E::AlreadyExists {
            path,
            source: clean(source),
        },
        E::Precondition { path, source } => E::Precondition {
            path,
            source: clean(source),
        },
        E::NotModified { path, source } => E::NotModified {
            path,
            source: clean(source),
        },
        E::PermissionDenied { path, source } => E::PermissionDenied {
            path,
            source: clean(source),
        },
        E::Unauthenticated { path, source } => E::Unauthenticated {
            path,
            source: clean(source),
        },
        other => E::Generic {
            store: "object store",
            source: Box::new(Redacted::of(&other)),
        },
    }
}

/// `e` unchanged, or, when its messages hold credentials, an error of the same kind with
/// the redacted message.
fn redact_io(e: std::io::Error) -> std::io::Error {
    if !chain_has_secrets(&e) {
        return e;
    }
    std::io::Error::new(e.kind(), Redacted::of(&e))
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    /// A 403 body as a proxy's error page gives it: the refused request echoed whole.
    const ECHOED: &str = "403 Forbidden: <?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Request>PUT /bucket/key HTTP/1.1\r\nhost: 127.0.0.1:9000\r\nx-amz-date: 20260101T000000Z\r\nX-Amz-Security-Token: FwoGZXIvYXdzEBYaDSESSIONTOKEN==\r\nauthorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEYID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=73e1297a6e1e0c0d\r\naccept: */*\r\n\r\n</Request></Error>";

    #[test]
    fn an_echoed_request_keeps_what_failed_but_no_credential() {
        let r = redact_secrets(ECHOED);
        for secret in [
            "FwoGZXIvYXdzEBYaDSESSIONTOKEN",
            "AKIAEXAMPLEKEYID",
            "73e1297a6e1e0c0d",
            "AWS4-HMAC-SHA256",
        ] {
            assert!(!r.contains(secret), "{secret} shown in {r}");
        }
        assert_eq!(
            r,
            "403 Forbidden: <?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Request>PUT /bucket/key HTTP/1.1\r\nhost: 127.0.0.1:9000\r\nx-amz-date: 20260101T000000Z\r\nX-Amz-Security-Token: ***\r\nauthorization: ***\r\naccept: */*\r\n\r\n</Request></Error>"
        );
    }

    #[test]
    fn parameters_elements_and_json_fields_are_redacted() {
        let cases = [
            (
                "Credential=AKIA1/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=abc",
                "Credential=***, SignedHeaders=host, Signature=***",
            ),
            (
                "GET http://h/b/k?X-Amz-Credential=AKIA1%2F2026&X-Amz-Security-Token=tok&X-Amz-Signature=ff&x=1 failed",
                "GET http://h/b/k?X-Amz-Credential=***&X-Amz-Security-Token=***&X-Amz-Signature=***&x=1 failed",
            ),
            (
                "https://acct.blob.core.windows.net/c/b?sv=2022&sig=abc%3D&se=1",
                "https://acct.blob.core.windows.net/c/b?sv=2022&sig=***&se=1",
            ),
            (
                "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIA1</AWSAccessKeyId><StringToSign>AWS4\nx</StringToSign><SignatureProvided>ab12</SignatureProvided><CanonicalRequestBytes>50 55</CanonicalRequestBytes></Error>",
                "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>***</AWSAccessKeyId><StringToSign>***</StringToSign><SignatureProvided>***</SignatureProvided><CanonicalRequestBytes>***</CanonicalRequestBytes></Error>",
            ),
            (
                r#"{"error": "denied", "headers": {"Authorization": "Bearer ya29.secret", "Proxy-Authorization":'Basic dXNlcjpwYXNz'}}"#,
                r#"{"error": "denied", "headers": {"Authorization": "***", "Proxy-Authorization":'***'}}"#,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(redact_secrets(text), want, "{text}");
        }
    }

    #[test]
    fn text_without_credentials_is_left_as_it_is() {
        for text in [
            "Object at location a/b.jsonl not found: 404 Not Found",
            "summaries.jsonl:17: signature_count: input should be a valid integer",
            "Signatures differ; x-authorization-mode: strict; designature=1",
            "Signature=***, Credential=***",
            "",
        ] {
            assert!(
                matches!(redact_secrets(text), std::borrow::Cow::Borrowed(_)),
                "{text} changed to {}",
                redact_secrets(text)
            );
        }
    }

    #[test]
    fn a_storage_error_is_redacted_in_its_message_debug_and_chain() {
        let source = object_store::Error::PermissionDenied {
            path: "p/summaries.jsonl".into(),
            source: ECHOED.into(),
        };
        let err = Error::storage("cannot write s3://bucket/p/summaries.jsonl", source);
        let mut texts = vec![err.to_string(), format!("{err:?}")];
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = cur {
            texts.push(e.to_string());
            cur = e.source();
        }
        for t in &texts {
            assert!(!t.contains("73e1297a6e1e0c0d"), "{t}");
            assert!(!t.contains("SESSIONTOKEN"), "{t}");
        }
        assert!(err.to_string().contains("403 Forbidden"), "{err}");
        // The variant is kept: the hint still says the credentials were refused.
        assert!(
            err.to_string().contains("hint: the server refused"),
            "{err}"
        );

        let io = std::io::Error::other(object_store::Error::Generic {
            store: "S3",
            source: ECHOED.into(),
        });
        let err = Error::io("cannot complete the write of s3://bucket/k", io);
        assert!(
            !format!("{err} {err:?}").contains("73e1297a6e1e0c0d"),
            "{err:?}"
        );
        assert!(err.to_string().contains("AccessDenied"), "{err}");
    }
}
