//! Storage faults between ckpt and the S3 server, injected by a TCP proxy on 127.0.0.1:
//! connections dropped, `500`/`503` answers, stalls beyond the request timeout, responses
//! cut short. Transient faults (the first few requests) are retried and the operation
//! succeeds; persistent ones fail with a clear error naming the bucket and key. Either way
//! no partial object becomes visible and the previous checkpoint stays intact — except that
//! a response cut after the server stored the new object leaves the complete new version
//! (the server committed; only the answer was lost): never anything in between.
//! After every scenario the server is asked for pending multipart uploads: there are
//! none, except exactly one for each start of an upload whose answer was cut short
//! (its id never arrived; see `assert_pending_uploads`).
//!
//! Operations: `ckpt convert` to S3 (one PUT, and a 10 MB JSONL as a multipart upload),
//! and a manager save and load through the library. The multipart upload meets each fault
//! at its start, and aimed at one step after it: a part upload (`PUT
//! ...?partNumber=N&uploadId=...`) or the completion (`POST ...?uploadId=...`). There a
//! persistent fault must end in an abort (`DELETE ...?uploadId=...`), and the proxy counts
//! the faults that landed on the step, so a scenario whose fault missed it fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ckpt::{CheckpointManager, ConversationSummary, FileFormat, Root, StorageOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{self, S3, ckpt, unique};

// ---- the proxy ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Close the connection without an answer.
    Drop,
    /// Answer with this status (and an S3 error body).
    Status(u16),
    /// Hold the connection, silent, for this long.
    Stall(Duration),
    /// Forward the request, then pass on only half of the response.
    Cut,
    /// Refuse the login: `403 AccessDenied`, echoing the whole request head (with its
    /// `Authorization` header) in the body, as some servers' error pages do.
    Forbidden,
}

struct Plan {
    fault: Fault,
    /// Faulty requests still to come (usize::MAX: all of them).
    remaining: usize,
    /// Only requests with one of these methods are faulty (None: any).
    methods: Option<Vec<&'static str>>,
    /// Only requests of this step of a multipart upload are faulty (None: any request).
    step: Option<Step>,
}

/// A step of a multipart upload after its start, as the request line tells it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// The upload of part N: `PUT ...?partNumber=N&uploadId=...` (its first attempt and
    /// every retry of it).
    Part(u32),
    /// The completion: `POST ...?uploadId=...` (without `uploads`, which starts one).
    Complete,
}

/// What a request does to multipart uploads, from its method and query.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Multipart {
    Start,
    Part(u32),
    Complete,
    /// `DELETE ...?uploadId=...`: the client gives the upload up.
    Abort,
}

fn multipart_request(method: &str, request_line: &str) -> Option<Multipart> {
    let query = request_line.split(' ').nth(1)?.split_once('?')?.1;
    let param = |name: &str| {
        query.split('&').find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k == name).then_some(v)
        })
    };
    match method {
        "POST" if param("uploads").is_some() => Some(Multipart::Start),
        "POST" if param("uploadId").is_some() => Some(Multipart::Complete),
        "PUT" if param("uploadId").is_some() => {
            Some(Multipart::Part(param("partNumber")?.parse().ok()?))
        }
        "DELETE" if param("uploadId").is_some() => Some(Multipart::Abort),
        _ => None,
    }
}

struct ProxyState {
    upstream: SocketAddr,
    plan: Mutex<Plan>,
    requests: AtomicUsize,
    injected: AtomicUsize,
    /// Requests that start a multipart upload (`POST ...?uploads`).
    multipart_starts: AtomicUsize,
    /// Of those, the ones whose response was cut short: the server started the upload,
    /// but the client never learned its id.
    cut_multipart_starts: AtomicUsize,
    /// Part uploads and completions seen, and of those the ones met by a fault: a
    /// scenario aimed at a step proves with these that its fault landed there.
    part_uploads: AtomicUsize,
    faulted_parts: AtomicUsize,
    completions: AtomicUsize,
    faulted_completions: AtomicUsize,
    /// Aborts of a multipart upload (`DELETE ...?uploadId=`) the client sent.
    multipart_aborts: AtomicUsize,
    /// The `Authorization` headers seen, to look for them in the output.
    authorizations: Mutex<Vec<String>>,
}

struct Proxy {
    endpoint: String,
    state: Arc<ProxyState>,
}

impl Proxy {
    async fn start(upstream_endpoint: &str) -> Proxy {
        let upstream: SocketAddr = upstream_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the S3 endpoint is http://127.0.0.1:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState {
            upstream,
            plan: Mutex::new(Plan {
                fault: Fault::Drop,
                remaining: 0,
                methods: None,
                step: None,
            }),
            requests: AtomicUsize::new(0),
            injected: AtomicUsize::new(0),
            multipart_starts: AtomicUsize::new(0),
            cut_multipart_starts: AtomicUsize::new(0),
            part_uploads: AtomicUsize::new(0),
            faulted_parts: AtomicUsize::new(0),
            completions: AtomicUsize::new(0),
            faulted_completions: AtomicUsize::new(0),
            multipart_aborts: AtomicUsize::new(0),
            authorizations: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = handle(client, st).await;
                });
            }
        });
        Proxy { endpoint, state }
    }

    /// The next `n` requests (of `methods`, if given) meet `fault`; the rest pass.
    fn set(&self, fault: Fault, n: usize, methods: Option<Vec<&'static str>>) {
        self.set_at(fault, n, methods, None);
    }

    /// As [`Proxy::set`], counting only requests of `step` of a multipart upload (any
    /// request when None); every other request passes.
    fn set_at(
        &self,
        fault: Fault,
        n: usize,
        methods: Option<Vec<&'static str>>,
        step: Option<Step>,
    ) {
        *self.state.plan.lock().unwrap() = Plan {
            fault,
            remaining: n,
            methods,
            step,
        };
        let st = &self.state;
        for counter in [
            &st.injected,
            &st.requests,
            &st.multipart_starts,
            &st.cut_multipart_starts,
            &st.part_uploads,
            &st.faulted_parts,
            &st.completions,
            &st.faulted_completions,
            &st.multipart_aborts,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// What the client did with multipart uploads since [`Proxy::set`].
    fn multipart_counts(&self) -> MultipartCounts {
        let st = &self.state;
        MultipartCounts {
            parts: st.part_uploads.load(Ordering::SeqCst),
            faulted_parts: st.faulted_parts.load(Ordering::SeqCst),
            completions: st.completions.load(Ordering::SeqCst),
            faulted_completions: st.faulted_completions.load(Ordering::SeqCst),
            aborts: st.multipart_aborts.load(Ordering::SeqCst),
        }
    }

    /// Multipart uploads started since [`Proxy::set`] whose id never reached the client.
    fn cut_multipart_starts(&self) -> usize {
        self.state.cut_multipart_starts.load(Ordering::SeqCst)
    }

    /// Multipart uploads started since [`Proxy::set`].
    fn multipart_starts(&self) -> usize {
        self.state.multipart_starts.load(Ordering::SeqCst)
    }

    /// Stops injecting; returns how many faults were injected since [`Proxy::set`].
    fn clear(&self) -> usize {
        self.state.plan.lock().unwrap().remaining = 0;
        self.state.injected.load(Ordering::SeqCst)
    }
}

/// Requests of multipart uploads the proxy saw (see [`Proxy::multipart_counts`]).
#[derive(Debug, Clone, Copy)]
struct MultipartCounts {
    /// Part uploads (retries included), and of those the ones that met a fault.
    parts: usize,
    faulted_parts: usize,
    /// Completions (retries included), and of those the ones that met a fault.
    completions: usize,
    faulted_completions: usize,
    /// Aborts (`DELETE ...?uploadId=`).
    aborts: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until the end of an HTTP head; returns (bytes read, head length).
async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            return Ok(Some((buf, i + 4)));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

async fn handle(mut client: TcpStream, st: Arc<ProxyState>) -> std::io::Result<()> {
    let Some((buf, head_len)) = read_head(&mut client).await? else {
        return Ok(());
    };
    st.requests.fetch_add(1, Ordering::SeqCst);
    let method = String::from_utf8_lossy(&buf[..buf.iter().position(|b| *b == b' ').unwrap_or(0)])
        .into_owned();
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let request_line = head.lines().next().unwrap_or_default();
    let multipart = multipart_request(&method, request_line);
    let starts_upload = multipart == Some(Multipart::Start);
    match multipart {
        Some(Multipart::Start) => st.multipart_starts.fetch_add(1, Ordering::SeqCst),
        Some(Multipart::Part(_)) => st.part_uploads.fetch_add(1, Ordering::SeqCst),
        Some(Multipart::Complete) => st.completions.fetch_add(1, Ordering::SeqCst),
        Some(Multipart::Abort) => st.multipart_aborts.fetch_add(1, Ordering::SeqCst),
        None => 0,
    };
    if let Some(auth) = head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.trim().to_owned())
    }) {
        st.authorizations.lock().unwrap().push(auth);
    }
    let fault = {
        let mut plan = st.plan.lock().unwrap();
        let applies = plan.remaining > 0
            && plan
                .methods
                .as_ref()
                .is_none_or(|m| m.contains(&method.as_str()))
            && plan.step.is_none_or(|step| match (step, multipart) {
                (Step::Part(n), Some(Multipart::Part(m))) => n == m,
                (Step::Complete, Some(Multipart::Complete)) => true,
                _ => false,
            });
        if applies {
            if plan.remaining != usize::MAX {
                plan.remaining -= 1;
            }
            st.injected.fetch_add(1, Ordering::SeqCst);
            match multipart {
                Some(Multipart::Part(_)) => {
                    st.faulted_parts.fetch_add(1, Ordering::SeqCst);
                }
                Some(Multipart::Complete) => {
                    st.faulted_completions.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
            Some(plan.fault)
        } else {
            None
        }
    };
    // The request body still to come.
    let body_left = content_length(&buf[..head_len]).saturating_sub(buf.len() - head_len);
    match fault {
        Some(Fault::Drop) => Ok(()),
        Some(Fault::Status(code)) => {
            drain(&mut client, body_left).await?;
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>injected fault</Message></Error>",
                if code == 503 {
                    "SlowDown"
                } else {
                    "InternalError"
                }
            );
            let reason = if code == 503 {
                "Service Unavailable"
            } else {
                "Internal Server Error"
            };
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(resp.as_bytes()).await?;
            client.shutdown().await
        }
        Some(Fault::Forbidden) => {
            drain(&mut client, body_left).await?;
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message><Request>{head}</Request></Error>"
            );
            let resp = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(resp.as_bytes()).await?;
            client.shutdown().await
        }
        Some(Fault::Stall(d)) => {
            drain(&mut client, body_left).await?;
            tokio::time::sleep(d).await;
            Ok(())
        }
        Some(Fault::Cut) => {
            let mut up = TcpStream::connect(st.upstream).await?;
            up.write_all(&buf).await?;
            let (mut client_r, mut client_w) = client.into_split();
            let (mut up_r, mut up_w) = up.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_r, &mut up_w).await;
            });
            let Some((resp, head)) = read_head_split(&mut up_r).await? else {
                return Ok(());
            };
            let total = content_length(&resp[..head]);
            let want = if total > 0 {
                head + total / 2
            } else {
                head / 2
            };
            let mut resp = resp;
            let mut chunk = [0u8; 64 * 1024];
            while resp.len() < want {
                let n = up_r.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                resp.extend_from_slice(&chunk[..n]);
            }
            if starts_upload {
                st.cut_multipart_starts.fetch_add(1, Ordering::SeqCst);
            }
            client_w.write_all(&resp[..want.min(resp.len())]).await?;
            Ok(()) // dropping both halves closes the connection mid-response
        }
        None => {
            // One request per connection, both ways: a client reusing this connection
            // would send its next requests past the proxy's eyes (neither counted nor
            // faulted), so the request goes upstream with `Connection: close` (the server
            // closes after answering) and the answer comes back with it (the client opens
            // a new connection for its next request).
            let mut up = TcpStream::connect(st.upstream).await?;
            up.write_all(&with_connection_close(&buf[..head_len]))
                .await?;
            up.write_all(&buf[head_len..]).await?;
            let (client_r, mut client_w) = client.into_split();
            let (mut up_r, mut up_w) = up.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_r.take(body_left as u64), &mut up_w).await;
            });
            let Some((resp, head)) = read_head_split(&mut up_r).await? else {
                return Ok(());
            };
            client_w
                .write_all(&with_connection_close(&resp[..head]))
                .await?;
            client_w.write_all(&resp[head..]).await?;
            tokio::io::copy(&mut up_r, &mut client_w).await?;
            client_w.shutdown().await
        }
    }
}

/// An HTTP head (request or response, ending in a blank line) with `Connection: close`
/// in place of any `Connection` or `Keep-Alive` header.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split_once(':').map(|(k, _)| k.trim());
        if name.is_some_and(|k| {
            k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("keep-alive")
        }) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

async fn read_head_split(
    s: &mut tokio::net::tcp::OwnedReadHalf,
) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            return Ok(Some((buf, i + 4)));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn drain(s: &mut TcpStream, mut left: usize) -> std::io::Result<()> {
    let mut chunk = [0u8; 64 * 1024];
    while left > 0 {
        let n = s.read(&mut chunk[..left.min(64 * 1024)]).await?;
        if n == 0 {
            break;
        }
        left -= n;
    }
    Ok(())
}

// ---- the scenarios ----------------------------------------------------------------------------

/// Quick retries: a 2 s request timeout and short backoffs keep the file fast.
fn retry_args(persistent: bool) -> Vec<String> {
    let mut v = vec![
        "request_timeout=2".to_owned(),
        "retry_timeout=20".to_owned(),
        "retry_backoff_ms=20".to_owned(),
    ];
    if persistent {
        v.push("retry_max=2".to_owned());
    }
    v
}

struct Setup {
    s3: S3,
    proxy: Proxy,
    prefix: String,
    /// The store reached directly (no proxy), to check what is visible.
    direct: Root,
    work: tempfile::TempDir,
}

impl Setup {
    async fn new(tag: &str) -> Setup {
        let s3 = S3::from_env();
        let proxy = Proxy::start(&s3.endpoint).await;
        let prefix = unique(tag);
        let direct = Root::with_options(&s3.url(&prefix), &s3.options()).unwrap();
        Setup {
            s3,
            proxy,
            prefix,
            direct,
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        self.s3.url(&self.prefix)
    }

    fn via_proxy(&self, persistent: bool) -> StorageOptions {
        let mut o = self.s3.via(&self.proxy.endpoint).options();
        for kv in retry_args(persistent) {
            o.set(&kv).unwrap();
        }
        o
    }

    fn cli_via_proxy(&self, persistent: bool) -> Vec<String> {
        let mut v = self.s3.via(&self.proxy.endpoint).cli_args();
        for kv in retry_args(persistent) {
            v.push("-S".into());
            v.push(kv);
        }
        v
    }

    async fn put_direct(&self, name: &str, bytes: &[u8]) {
        let mut w = self.direct.writer(name).unwrap();
        w.write(Bytes::copy_from_slice(bytes)).await.unwrap();
        w.commit().await.unwrap();
    }

    async fn get_direct(&self, name: &str) -> Option<Vec<u8>> {
        self.direct.head(name).await.unwrap()?;
        Some(self.direct.get(name).await.unwrap().to_vec())
    }

    /// Every key under the test's prefix, seen directly.
    async fn keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let prefix = object_store::path::Path::from(self.prefix.as_str());
        let mut v: Vec<String> = self
            .direct
            .store()
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        v.sort();
        v
    }
}

/// Scenarios after which the server was asked for pending uploads and had none.
static CLEAN_SCENARIOS: AtomicUsize = AtomicUsize::new(0);

fn assert_no_pending_uploads(t: &Setup, what: &str) {
    assert_pending_uploads(t, what, None, 0);
}

/// The server holds exactly `orphans` pending uploads under the test's prefix, all of
/// `key` (none when `orphans` is 0); they are then aborted, so the next scenario starts
/// clean.
///
/// An upload whose start was answered with a response cut short is the one leak no client
/// can prevent: the server started it, but its id, which an abort needs, never arrived
/// (object_store has no call to list pending uploads). ckpt then starts another upload
/// (see `CutBodiesRetried` in storage.rs), so each cut answer leaves exactly one upload
/// behind, for the bucket's lifecycle rule to remove; every upload whose id ckpt learned
/// is completed or aborted.
fn assert_pending_uploads(t: &Setup, what: &str, key: Option<&str>, orphans: usize) {
    let pending = t.s3.pending_uploads(&format!("{}/", t.prefix), orphans > 0);
    if orphans == 0 {
        assert!(
            pending.is_empty(),
            "{what}: multipart uploads left pending on the server: {pending:?}"
        );
        CLEAN_SCENARIOS.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let key = format!("{}/{}", t.prefix, key.expect("the key of the orphans"));
    assert_eq!(
        pending.len(),
        orphans,
        "{what}: expected one pending upload per cut-short start ({orphans}), found {pending:?}"
    );
    assert!(
        pending
            .iter()
            .all(|p| p.split_once(' ').is_some_and(|(k, _)| k == key)),
        "{what}: pending uploads of another key than {key}: {pending:?}"
    );
    ORPHANED_UPLOADS.fetch_add(orphans, Ordering::SeqCst);
}

/// Uploads left pending because the response that started them was cut short.
static ORPHANED_UPLOADS: AtomicUsize = AtomicUsize::new(0);

/// What the scenario table says of one fault.
#[derive(Clone)]
struct Scenario {
    name: &'static str,
    fault: Fault,
    /// Faulty requests for the transient run (the persistent run faults them all).
    transient: usize,
    methods: Option<Vec<&'static str>>,
    /// The step of a multipart upload the faults are aimed at (None: the first requests).
    step: Option<Step>,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "dropped connections",
            fault: Fault::Drop,
            transient: 2,
            methods: None,
            step: None,
        },
        Scenario {
            name: "HTTP 500",
            fault: Fault::Status(500),
            transient: 2,
            methods: None,
            step: None,
        },
        Scenario {
            name: "HTTP 503",
            fault: Fault::Status(503),
            transient: 3,
            methods: None,
            step: None,
        },
        Scenario {
            name: "stalls beyond the request timeout",
            fault: Fault::Stall(Duration::from_secs(5)),
            transient: 1,
            methods: None,
            step: None,
        },
        Scenario {
            name: "responses cut short",
            fault: Fault::Cut,
            transient: 2,
            methods: None,
            step: None,
        },
    ]
}

/// `ckpt convert` of a local checkpoint to `target` on S3, over a previous version.
async fn convert_scenario(
    t: &Setup,
    sc: &Scenario,
    persistent: bool,
    target: &str,
    src: &std::path::Path,
    old: &[u8],
) {
    let what = format!("convert to {target}, {} {}", kind(persistent), sc.name);
    // What a complete conversion writes (it is deterministic).
    let local = t.work.path().join("expected").join(target);
    ckpt([
        "convert",
        "-q",
        src.to_str().unwrap(),
        local.to_str().unwrap(),
    ])
    .expect_ok("a local convert");
    let new = std::fs::read(&local).unwrap();
    t.put_direct(target, old).await;
    let keys_before = t.keys().await;
    let n = if persistent { usize::MAX } else { sc.transient };
    t.proxy.set_at(sc.fault, n, sc.methods.clone(), sc.step);
    let mut args = t.cli_via_proxy(persistent);
    args.extend([
        "convert".to_owned(),
        "-q".to_owned(),
        src.to_str().unwrap().to_owned(),
        format!("{}/{target}", t.url()),
    ]);
    let started = Instant::now();
    let r = ckpt(&args);
    let took = started.elapsed();
    let multipart = t.proxy.multipart_starts();
    let cut_starts = t.proxy.cut_multipart_starts();
    let steps = t.proxy.multipart_counts();
    let injected = t.proxy.clear();
    // The 10 MB JSONL goes as a multipart upload (started once per attempt); the small
    // Parquet file as one PUT.
    if target == "big.jsonl" {
        assert!(multipart > 0, "{what}: no multipart upload was started");
    } else {
        assert_eq!(multipart, 0, "{what}: a multipart upload for a small file");
    }
    assert!(injected > 0, "{what}: no fault was injected");
    // A fault aimed at a step landed there, and only there: else the scenario would test
    // the start again (or nothing).
    match sc.step {
        Some(Step::Part(_)) => assert!(
            steps.faulted_parts > 0 && steps.faulted_parts == injected,
            "{what}: the faults did not land on the part upload ({injected} injected): {steps:?}"
        ),
        Some(Step::Complete) => assert!(
            steps.faulted_completions > 0 && steps.faulted_completions == injected,
            "{what}: the faults did not land on the completion ({injected} injected): {steps:?}"
        ),
        None => {}
    }
    let now = t.get_direct(target).await.expect("the target exists");
    // Every answer to a completion cut short: the server did complete the upload, so an
    // abort finds no upload, and the writer checks the object itself — there whole, it is
    // a success, not an error about a write that happened.
    let completed_unheard = persistent && sc.fault == Fault::Cut && sc.step == Some(Step::Complete);
    if completed_unheard {
        r.expect_ok(&what);
        assert!(
            now == new,
            "{what}: the target is not the complete new version"
        );
        assert!(
            steps.aborts > 0,
            "{what}: the writer did not ask the server whether the upload was still open: {steps:?}"
        );
    } else if persistent {
        let r = r.expect_err(&what);
        let key = format!("{}/{target}", t.prefix);
        assert!(
            r.stderr.contains(&t.s3.bucket) && r.stderr.contains(&key),
            "{what}: the error names neither bucket nor key:\n{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{what}");
        // A response cut after the server stored the object leaves the client unsure, but
        // the object is whole: the previous version or the complete new one.
        assert!(
            now == old || (sc.fault == Fault::Cut && now == new),
            "{what}: the target is {} bytes, neither the previous ({}) nor the new ({})",
            now.len(),
            old.len(),
            new.len()
        );
        if let Some(step) = sc.step {
            // The upload had started and its id was known: the client gave it up
            // explicitly, rather than leaving its parts to the bucket's lifecycle rule.
            assert!(
                steps.aborts > 0,
                "{what}: the upload was not aborted (no DELETE ...?uploadId= reached the proxy): {steps:?}"
            );
            // A part the client never saw accepted means no completion is sent: the
            // server cannot have committed anything, whatever the fault (a cut answer
            // included, unlike a cut completion).
            if matches!(step, Step::Part(_)) {
                assert!(
                    now == old,
                    "{what}: the target is {} bytes, not the previous version ({})",
                    now.len(),
                    old.len()
                );
            }
        }
    } else {
        r.expect_ok(&what);
        assert!(
            now == new,
            "{what}: the target is not the complete new version"
        );
    }
    assert_eq!(t.keys().await, keys_before, "{what}: objects appeared");
    if sc.fault != Fault::Cut {
        assert_eq!(cut_starts, 0, "{what}: the proxy cut a response");
    }
    assert_pending_uploads(t, &what, Some(target), cut_starts);
    eprintln!(
        "{what}: {} in {took:.1?} ({injected} faults, {multipart} multipart uploads started, {cut_starts} of them cut short and left pending, none other; {} part uploads, {} of them faulted; {} completions, {} of them faulted; {} aborts)",
        outcome(persistent),
        steps.parts,
        steps.faulted_parts,
        steps.completions,
        steps.faulted_completions,
        steps.aborts
    );
}

fn kind(persistent: bool) -> &'static str {
    if persistent {
        "persistent"
    } else {
        "transient"
    }
}

fn outcome(persistent: bool) -> &'static str {
    if persistent { "failed" } else { "succeeded" }
}

/// A manager save, then a load, through the proxy.
async fn library_scenario(t: &Setup, sc: &Scenario, persistent: bool) {
    let what = format!("library, {} {}", kind(persistent), sc.name);
    let old = common::summaries(50, 16, 1);
    let new = common::summaries(60, 16, 2);
    let direct =
        CheckpointManager::with_storage(&t.url(), FileFormat::Jsonl, &t.s3.options()).unwrap();
    direct.save("summaries", &old).await.unwrap();
    let keys_before = t.keys().await;
    let m = CheckpointManager::with_storage(&t.url(), FileFormat::Jsonl, &t.via_proxy(persistent))
        .unwrap();
    let n = if persistent { usize::MAX } else { sc.transient };

    // save
    t.proxy.set(sc.fault, n, sc.methods.clone());
    let saved = m.save("summaries", &new).await;
    assert!(
        t.proxy.clear() > 0,
        "{what}: no fault was injected in the save"
    );
    let now: Vec<ConversationSummary> = direct.load("summaries").await.unwrap().unwrap();
    if persistent {
        let err = saved.expect_err(&what).to_string();
        assert!(
            err.contains(&t.s3.bucket) && err.contains(&format!("{}/summaries.jsonl", t.prefix)),
            "{what}: save error names neither bucket nor key: {err}"
        );
        assert!(
            now == old || (sc.fault == Fault::Cut && now == new),
            "{what}: the checkpoint is neither the previous nor the new version"
        );
    } else {
        saved.unwrap_or_else(|e| panic!("{what}: save failed: {e}"));
        assert!(now == new, "{what}: the saved checkpoint differs");
    }
    assert_eq!(t.keys().await, keys_before, "{what}: objects appeared");

    // load (of whatever is there now)
    let methods = match sc.fault {
        Fault::Cut => Some(vec!["GET"]),
        _ => sc.methods.clone(),
    };
    t.proxy.set(sc.fault, n, methods);
    let loaded = m.load::<ConversationSummary>("summaries").await;
    assert!(
        t.proxy.clear() > 0,
        "{what}: no fault was injected in the load"
    );
    if persistent {
        let err = loaded.expect_err(&what).to_string();
        assert!(
            err.contains(&t.s3.bucket) || err.contains(&t.proxy.endpoint),
            "{what}: load error names neither bucket nor URL: {err}"
        );
    } else {
        let loaded = loaded
            .unwrap_or_else(|e| panic!("{what}: load failed: {e}"))
            .unwrap();
        assert!(loaded == now, "{what}: loaded other rows");
    }
    assert_no_pending_uploads(t, &what);
    eprintln!("{what}: {}, no upload left pending", outcome(persistent));
}

async fn run_fault(sc: Scenario) {
    let t = Setup::new("faults").await;
    // A small checkpoint (one PUT) and, for the multipart path, 10 MB of JSONL.
    let small = t.work.path().join("small");
    let big = t.work.path().join("big");
    let old_dir = t.work.path().join("old");
    for (dir, n, dim, seed) in [
        (&small, "200", "16", "1"),
        (&big, "1200", "384", "1"),
        (&old_dir, "100", "16", "2"),
    ] {
        ckpt([
            "generate",
            dir.to_str().unwrap(),
            "--summaries",
            n,
            "--dim",
            dim,
            "--seed",
            seed,
            "--no-conversations",
            "--format",
            "both",
        ])
        .expect_ok("generate");
    }
    let old_parquet = std::fs::read(old_dir.join("summaries.parquet")).unwrap();
    let old_jsonl = std::fs::read(old_dir.join("summaries.jsonl")).unwrap();
    for persistent in [false, true] {
        convert_scenario(
            &t,
            &sc,
            persistent,
            "summaries.parquet",
            &small.join("summaries.jsonl"),
            &old_parquet,
        )
        .await;
        library_scenario(&t, &sc, persistent).await;
    }
    // A multipart upload (a 8 MiB part and a last, smaller one): faults on its first
    // PUT/POST requests, which is its start (`POST ...?uploads`).
    let parts = Scenario {
        methods: Some(vec!["PUT", "POST"]),
        ..sc.clone()
    };
    for persistent in [false, true] {
        convert_scenario(
            &t,
            &parts,
            persistent,
            "big.jsonl",
            &big.join("summaries.parquet"),
            &old_jsonl,
        )
        .await;
    }
    // The same upload with faults aimed at the steps after its start, whose id the client
    // knows: the first part (sent while the rest is still being written), the last part
    // (sent when the write is committed) and the completion. Transient ones are retried
    // and the upload completes; persistent ones fail the write, which aborts the upload.
    for step in [Step::Part(1), Step::Part(2), Step::Complete] {
        let aimed = Scenario {
            methods: None,
            step: Some(step),
            ..sc.clone()
        };
        for persistent in [false, true] {
            convert_scenario(
                &t,
                &aimed,
                persistent,
                "big.jsonl",
                &big.join("summaries.parquet"),
                &old_jsonl,
            )
            .await;
        }
    }
    eprintln!(
        "{}: {} scenario checks found no pending multipart upload; {} uploads left pending by cut-short starts (all of them, none other)",
        sc.name,
        CLEAN_SCENARIOS.load(Ordering::SeqCst),
        ORPHANED_UPLOADS.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections() {
    run_fault(scenarios().remove(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500() {
    run_fault(scenarios().remove(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503() {
    run_fault(scenarios().remove(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls() {
    run_fault(scenarios().remove(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_cut_short() {
    run_fault(scenarios().remove(4)).await;
}

/// A server refusing the login with `403 AccessDenied` and the request (its
/// `Authorization` header included) echoed in the error body: the failure is reported,
/// exit 1, naming the refusal, and neither the secret key nor any signature the client
/// sent appears in the output, at any verbosity, nor in the library's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_reported_without_the_secret() {
    let t = Setup::new("login").await;
    let src = t.work.path().join("src");
    ckpt([
        "generate",
        src.to_str().unwrap(),
        "--summaries",
        "20",
        "--dim",
        "4",
        "--no-conversations",
    ])
    .expect_ok("generate");
    t.proxy.set(Fault::Forbidden, usize::MAX, None);
    let mut outputs = Vec::new();
    for verbosity in [None, Some("-v"), Some("-vv")] {
        let mut args: Vec<String> = verbosity.into_iter().map(str::to_owned).collect();
        args.extend(t.cli_via_proxy(true));
        args.extend([
            "convert".to_owned(),
            src.join("summaries.jsonl").to_str().unwrap().to_owned(),
            format!("{}/summaries.parquet", t.url()),
        ]);
        let r = ckpt(&args).expect_err("a refused login");
        assert_eq!(r.code, Some(1), "{verbosity:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("403") && r.stderr.contains(&t.s3.bucket),
            "{verbosity:?}: the refusal is not reported with its status and bucket:\n{}",
            r.stderr
        );
        outputs.push((format!("ckpt {verbosity:?}"), r.stdout + &r.stderr));
    }
    let m =
        CheckpointManager::with_storage(&t.url(), FileFormat::Jsonl, &t.via_proxy(true)).unwrap();
    let err = m
        .save("summaries", &common::summaries(5, 16, 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "library: {err}");
    outputs.push(("library error".into(), format!("{err}\n{err:?}")));
    assert!(t.proxy.clear() > 0, "no login was refused");

    let authorizations = t.proxy.state.authorizations.lock().unwrap().clone();
    assert!(!authorizations.is_empty(), "no request was signed");
    let signatures: Vec<&str> = authorizations
        .iter()
        .filter_map(|a| a.split("Signature=").nth(1))
        .collect();
    assert_eq!(signatures.len(), authorizations.len(), "{authorizations:?}");
    for (what, text) in &outputs {
        assert!(
            !text.contains(&t.s3.secret),
            "{what}: the secret key is shown:\n{text}"
        );
        for sig in &signatures {
            assert!(
                !text.contains(sig),
                "{what}: a request signature is shown:\n{text}"
            );
        }
        assert!(
            !text.contains("Authorization"),
            "{what}: the echoed Authorization header is shown:\n{text}"
        );
    }
    assert_no_pending_uploads(&t, "a refused login");
}
