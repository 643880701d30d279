//! Credentials out of error messages. A server's error body may echo the request it
//! refused, signature, key id and session token included (S3's `SignatureDoesNotMatch`
//! does, and so do some proxies' error pages); object_store puts that body in its error.
//! So every error that can carry text from a server passes through [`redact_secrets`]
//! when it is made ([`crate::Error::storage`], [`crate::Error::io`], and the engine's
//! Arrow, Parquet and DataFusion errors): its message, `Debug` and cause chain never hold
//! such material. Hand-written: the rules are a short list of header, parameter and XML
//! names, and a regex engine would add a dependency for less control over the edges.

use std::fmt;

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
pub(crate) fn chain_has_secrets(e: &(dyn std::error::Error + 'static)) -> bool {
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
    pub(crate) fn of(e: &dyn std::error::Error) -> Redacted {
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
pub(crate) fn redact_object_store(e: object_store::Error) -> object_store::Error {
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
pub(crate) fn redact_io(e: std::io::Error) -> std::io::Error {
    if !chain_has_secrets(&e) {
        return e;
    }
    std::io::Error::new(e.kind(), Redacted::of(&e))
}

#[cfg(test)]
pub(crate) mod redaction_tests {
    use super::*;

    /// A 403 body as a proxy's error page gives it: the refused request echoed whole.
    pub(crate) const ECHOED: &str = "403 Forbidden: <?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Request>PUT /bucket/key HTTP/1.1\r\nhost: 127.0.0.1:9000\r\nx-amz-date: 20260101T000000Z\r\nX-Amz-Security-Token: FwoGZXIvYXdzEBYaDSESSIONTOKEN==\r\nauthorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEYID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=73e1297a6e1e0c0d\r\naccept: */*\r\n\r\n</Request></Error>";

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
}
