//! `ckpt serve`: the JSON API against `ckpt query`, its refusals (writes, other hosts and
//! origins), its limits (rows, time, memory, cancel), downloads, the views' endpoints, a
//! root on S3, and the page in a real browser (headless Chromium driven by selenium,
//! `tests/browser/explorer.py`).

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ckpt::serve::{ServeOptions, Server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server answering on 127.0.0.1 (port chosen by the system) until the test ends.
struct Served {
    addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

/// The sample run (`data/`), copied: tests never read `data/` itself, which the examples
/// write into.
fn sample_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::copy_sample(dir.path(), false);
    dir
}

async fn start_with(
    roots: Vec<(String, String)>,
    dir: Option<tempfile::TempDir>,
    tweak: impl FnOnce(&mut ServeOptions),
) -> Served {
    let mut options = ServeOptions {
        roots,
        listen: "127.0.0.1:0".to_owned(),
        ..Default::default()
    };
    tweak(&mut options);
    let server = Server::bind(options).await.expect("the server starts");
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    Served { addr, _dir: dir }
}

async fn start_sample(tweak: impl FnOnce(&mut ServeOptions)) -> (Served, PathBuf) {
    let dir = sample_root();
    let path = dir.path().to_path_buf();
    let roots = vec![("root".to_owned(), path.to_str().unwrap().to_owned())];
    (start_with(roots, Some(dir), tweak).await, path)
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection (a client of a few lines: the tests must
/// set any Host and Origin they like, which HTTP client libraries guard).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], None).await
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(&body.to_string()),
    )
    .await
}

async fn query(addr: SocketAddr, sql: &str) -> Reply {
    post_json(addr, "/api/query", &json!({ "sql": sql })).await
}

/// `ckpt query ROOT --format json SQL`'s rows.
fn cli_rows(root: &Path, sql: &str) -> Vec<serde_json::Map<String, Value>> {
    let run = common::ckpt(["query", root.to_str().unwrap(), "--format", "json", sql])
        .expect_ok("ckpt query");
    let rows: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    rows.into_iter()
        .map(|r| r.as_object().unwrap().clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_those_of_ckpt_query() {
    let (s, root) = start_sample(|_| {}).await;
    for sql in [
        "SELECT topic, count(*) AS n FROM summaries GROUP BY topic ORDER BY n DESC, topic",
        "SELECT chat_id, user_frustration, concerning_score FROM summaries ORDER BY chat_id LIMIT 40",
        "SELECT name, count, parent_id FROM meta_clusters ORDER BY name",
        "SELECT id, x_coord, y_coord, level FROM dimensionality ORDER BY id",
        "SELECT avg(user_frustration) AS f, sum(CASE WHEN user_frustration >= 4 THEN 1 ELSE 0 END) AS hi FROM summaries",
    ] {
        let r = query(s.addr, sql).await;
        assert_eq!(r.status, 200, "{sql}: {}", r.text());
        let v = r.json();
        assert_eq!(v["truncated"], json!(false), "{sql}");
        let columns: Vec<String> = v["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        let expected = cli_rows(&root, sql);
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "{sql}");
        for (row, want) in rows.iter().zip(&expected) {
            for (i, name) in columns.iter().enumerate() {
                let got = &row[i];
                let want = want.get(name).unwrap_or(&Value::Null);
                match (got.as_f64(), want.as_f64()) {
                    (Some(a), Some(b)) => assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        "{sql}: {name}: {a} vs {b}"
                    ),
                    _ => assert_eq!(got, want, "{sql}: column {name}"),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_outside_the_roots_are_refused_with_403() {
    let (s, root) = start_sample(|_| {}).await;
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("leak.csv");
    let target = target.to_str().unwrap();
    for sql in [
        format!("COPY summaries TO '{target}'"),
        "COPY summaries TO 'copied.csv'".to_owned(),
        format!("EXPLAIN ANALYZE COPY summaries TO '{target}'"),
        format!("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{target}'"),
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'".to_owned(),
        "CREATE TABLE t AS SELECT 1".to_owned(),
        "CREATE VIEW v AS SELECT * FROM summaries".to_owned(),
        "DROP TABLE summaries".to_owned(),
        "INSERT INTO summaries SELECT * FROM summaries".to_owned(),
        "DELETE FROM summaries".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
    ] {
        let r = query(s.addr, &sql).await;
        assert_eq!(r.status, 403, "{sql}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("read"), "{sql}: {error}");
    }
    assert!(!Path::new(target).exists());
    assert!(!root.join("copied.csv").exists());
    // Only checkpoints of the roots are tables: a path is no table name, and no table
    // function reads files.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM \"../summaries.jsonl\"",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM parquet_metadata('/etc/passwd')",
    ] {
        let r = query(s.addr, sql).await;
        assert!(
            matches!(r.status, 400 | 403),
            "{sql}: {} {}",
            r.status,
            r.text()
        );
        assert!(r.json()["error"].is_string(), "{sql}");
    }
    // The number generators stay (they read nothing).
    let r = query(s.addr, "SELECT count(*) AS n FROM generate_series(1, 10)").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // One statement at a time; SQL that does not parse is a 400 with the parser's words.
    let r = query(s.addr, "SELECT 1; SELECT 2").await;
    assert_eq!(r.status, 400);
    let r = query(s.addr, "SELEC 1").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("SQL syntax error")
    );
    // The read statements all run.
    for sql in [
        "SHOW TABLES",
        "DESCRIBE summaries",
        "EXPLAIN SELECT count(*) FROM summaries",
        "WITH t AS (SELECT 1 AS a) SELECT a FROM t",
        "SHOW COLUMNS FROM summaries",
    ] {
        let r = query(s.addr, sql).await;
        assert_eq!(r.status, 200, "{sql}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hosts_and_origins_are_refused_and_headers_are_strict() {
    let (s, _root) = start_sample(|_| {}).await;
    let port = s.addr.port();
    let evil = format!("evil.example:{port}");
    for path in ["/", "/api/tree", "/app.js"] {
        let r = request(s.addr, "GET", path, &[("Host", &evil)], None).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(r.json()["error"].as_str().unwrap().contains("Host"));
    }
    let r = request(
        s.addr,
        "GET",
        "/api/tree",
        &[("Host", &format!("127.0.0.1:{}", port + 1))],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let r = request(s.addr, "GET", "/api/tree", &[("Host", &host)], None).await;
        assert_eq!(r.status, 200, "{host}");
    }
    // Another site's page: its Origin is refused, and nothing grants it CORS.
    let r = request(
        s.addr,
        "POST",
        "/api/query",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        Some(r#"{"sql": "SELECT 1"}"#),
    )
    .await;
    assert_eq!(r.status, 403);
    let own = format!("http://{}", s.addr);
    let r = request(
        s.addr,
        "POST",
        "/api/query",
        &[("Content-Type", "application/json"), ("Origin", &own)],
        Some(r#"{"sql": "SELECT 1"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    // A form of another site cannot send JSON without a preflight, which is never granted.
    let r = request(
        s.addr,
        "POST",
        "/api/query",
        &[("Content-Type", "text/plain")],
        Some(r#"{"sql": "SELECT 1"}"#),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = request(
        s.addr,
        "OPTIONS",
        "/api/query",
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    )
    .await;
    assert_ne!(r.status, 200);
    for path in [
        "/",
        "/app.js",
        "/style.css",
        "/api/overview",
        "/api/nothing",
    ] {
        let r = get(s.addr, path).await;
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert!(csp.contains("default-src 'none'"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(r.header("access-control-allow-origin").is_none(), "{path}");
    }
    // The page has no inline script or style, and loads its modules from the server.
    let page = get(s.addr, "/").await.text();
    assert!(page.contains(r#"<script type="module" src="/app.js"></script>"#));
    assert_eq!(page.matches("<script").count(), 1);
    assert!(!page.contains("<style") && !page.contains(" style="));
    for asset in ["app.js", "dom.js", "map.js"] {
        let js = get(s.addr, &format!("/{asset}")).await.text();
        assert!(
            !js.contains("innerHTML")
                && !js.contains("insertAdjacentHTML")
                && !js.contains("document.write"),
            "{asset}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_capped_and_the_answer_says_so() {
    let (s, _root) = start_sample(|o| o.row_cap = 7).await;
    let r = query(s.addr, "SELECT chat_id FROM summaries").await.json();
    assert_eq!(r["rows"].as_array().unwrap().len(), 7);
    assert_eq!(r["truncated"], json!(true));
    let r = query(s.addr, "SELECT chat_id FROM summaries LIMIT 7")
        .await
        .json();
    assert_eq!(r["rows"].as_array().unwrap().len(), 7);
    assert_eq!(r["truncated"], json!(false));
    let r = query(s.addr, "SELECT chat_id FROM summaries LIMIT 3")
        .await
        .json();
    assert_eq!(r["rows"].as_array().unwrap().len(), 3);
    assert_eq!(r["truncated"], json!(false));
    assert_eq!(r["columns"], json!([{"name": "chat_id", "type": "Utf8"}]));
    // Downloads have the whole result.
    let r = post_json(
        s.addr,
        "/api/query?format=csv",
        &json!({"sql": "SELECT chat_id FROM summaries"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text().lines().count(), 251);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_is_stopped_at_the_time_limit_and_can_be_cancelled() {
    let slow = "SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3";
    let (s, _root) = start_sample(|o| o.query_timeout = Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let r = query(s.addr, slow).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("limit"));
    assert!(started.elapsed() < Duration::from_secs(20));
    // The server answers the next query.
    assert_eq!(query(s.addr, "SELECT 1").await.status, 200);

    let (s, _root) = start_sample(|o| o.query_timeout = Duration::from_secs(600)).await;
    let addr = s.addr;
    let running = tokio::spawn(async move {
        post_json(addr, "/api/query", &json!({"sql": slow, "id": "q-1"})).await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = std::time::Instant::now();
    let c = post_json(s.addr, "/api/cancel", &json!({"id": "q-1"}))
        .await
        .json();
    assert_eq!(c["cancelled"], json!(true));
    let r = running.await.unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("cancelled"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let c = post_json(s.addr, "/api/cancel", &json!({"id": "q-1"}))
        .await
        .json();
    assert_eq!(c["cancelled"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_limit_holds_and_errors_are_the_engines_message() {
    let (s, _root) = start_sample(|o| o.session.memory_limit = Some(4 << 20)).await;
    let r = query(
        s.addr,
        "SELECT array_agg(value) FROM generate_series(1, 20000000)",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        e.to_lowercase().contains("resources exhausted") || e.contains("memory"),
        "{e}"
    );
    assert!(!e.contains("backtrace") && !e.contains("src/"), "{e}");
    let r = query(s.addr, "SELECT nope FROM summaries").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_stream_csv_json_and_parquet() {
    let (s, _root) = start_sample(|_| {}).await;
    let sql =
        json!({"sql": "SELECT chat_id, topic, user_frustration FROM summaries ORDER BY chat_id"});
    let csv = post_json(s.addr, "/api/query?format=csv", &sql).await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.header("content-disposition")
            .unwrap()
            .contains("attachment")
    );
    let text = csv.text();
    assert_eq!(text.lines().next(), Some("chat_id,topic,user_frustration"));
    assert_eq!(text.lines().count(), 251);
    let ndjson = post_json(s.addr, "/api/query?format=json", &sql).await;
    assert_eq!(ndjson.status, 200);
    let lines: Vec<Value> = ndjson
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 250);
    assert!(lines[0]["chat_id"].is_string());
    let pq = post_json(s.addr, "/api/query?format=parquet", &sql).await;
    assert_eq!(pq.status, 200);
    assert!(pq.body.starts_with(b"PAR1") && pq.body.ends_with(b"PAR1"));
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(pq.body.clone()),
        )
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 250);
    // A refused statement is refused for downloads too; a bad format is a 400.
    let r = post_json(
        s.addr,
        "/api/query?format=csv",
        &json!({"sql": "COPY summaries TO 'x.csv'"}),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post_json(s.addr, "/api/query?format=xml", &sql).await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_views_endpoints_answer_over_the_sample_run() {
    let (s, _root) = start_sample(|_| {}).await;
    let o = get(s.addr, "/api/overview").await.json();
    assert_eq!(o["numbers"]["summaries"], json!(250));
    assert_eq!(o["numbers"]["conversations"], json!(250));
    assert_eq!(o["numbers"]["meta_clusters"], json!(23));
    assert_eq!(o["numbers"]["levels"], json!(3));
    assert_eq!(o["roots"][0]["checkpoints"].as_array().unwrap().len(), 10);
    let c = get(s.addr, "/api/check").await.json();
    assert_eq!(c["report"]["consistent"], json!(true), "{c}");
    let t = get(s.addr, "/api/tree").await.json();
    let clusters = t["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 23);
    let top: Vec<&Value> = clusters
        .iter()
        .filter(|c| c["parent_id"].is_null())
        .collect();
    assert_eq!(top.len(), 1);
    let top_id = top[0]["id"].as_str().unwrap();
    let m = get(s.addr, "/api/map").await.json();
    assert_eq!(m["points"].as_array().unwrap().len(), 23);
    assert_eq!(m["total"], json!(23));
    let m = get(s.addr, "/api/map?limit=5").await.json();
    assert_eq!(m["points"].as_array().unwrap().len(), 5);
    let d = get(s.addr, &format!("/api/cluster?id={top_id}"))
        .await
        .json();
    assert_eq!(d["cluster"]["count"], json!(250));
    assert_eq!(d["children"].as_array().unwrap().len(), 6);
    let p = get(
        s.addr,
        &format!("/api/summaries?cluster={top_id}&offset=240&limit=20"),
    )
    .await
    .json();
    assert_eq!(p["total"], json!(250));
    assert_eq!(p["rows"].as_array().unwrap().len(), 10);
    let chat = p["rows"][0]["chat_id"].as_str().unwrap().to_owned();
    let f = get(s.addr, &format!("/api/facets?id={top_id}"))
        .await
        .json();
    let names: Vec<&str> = f["facets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"topic")
            && names.contains(&"languages")
            && names.contains(&"metadata keys"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("metadata.")),
        "{names:?}"
    );
    let one = get(s.addr, &format!("/api/summary?chat_id={chat}"))
        .await
        .json();
    assert_eq!(one["summary"]["chat_id"], json!(chat));
    let messages = one["conversation"]["messages"].as_array().unwrap();
    assert!(!messages.is_empty());
    assert!(messages[0]["role"].is_string() && messages[0]["content"].is_string());
    assert_eq!(get(s.addr, "/api/cluster?id=nope").await.status, 404);
    assert_eq!(get(s.addr, "/api/summary?chat_id=nope").await.status, 404);
    // A quote in a parameter is a value, never SQL.
    assert_eq!(
        get(s.addr, "/api/cluster?id=x%27%20OR%20%271%27=%271")
            .await
            .status,
        404
    );
    let e = get(s.addr, "/api/examples").await.json();
    let examples = e["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 8);
    for x in examples.iter().filter(|x| x["read_only"] == json!(true)) {
        let r = query(s.addr, x["sql"].as_str().unwrap()).await;
        assert_eq!(r.status, 200, "{}: {}", x["name"], r.text());
    }
}

/// `ckpt serve` the binary: it prints its address, binds loopback by default, warns for
/// others.
#[test]
fn the_binary_prints_its_address_and_warns_off_loopback() {
    use std::io::BufRead;
    let dir = sample_root();
    for (listen, warns) in [("127.0.0.1:0", false), ("0.0.0.0:0", true)] {
        let mut child = common::ckpt_cmd()
            .args(["serve", dir.path().to_str().unwrap(), "--listen", listen])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on http://"), "{line}");
        let url = line.trim().trim_start_matches("listening on ").to_owned();
        let port: u16 = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(port, 0);
        // SIGTERM stops it cleanly.
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = common::wait_exit(&mut child, Duration::from_secs(20), "ckpt serve", || {
            String::new()
        });
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "{stderr}");
        assert_eq!(
            stderr.contains("warning: listening on"),
            warns,
            "{listen}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_on_s3_is_served() {
    let s3 = common::S3::from_env();
    let local = sample_root();
    let url = s3.url(&common::unique("serve"));
    let mut args = vec![
        "convert".to_owned(),
        local.path().to_str().unwrap().to_owned(),
        url.clone(),
        "--to".to_owned(),
        "parquet".to_owned(),
        "--quiet".to_owned(),
    ];
    args.extend(s3.cli_args());
    common::ckpt(&args).expect_ok("convert to S3");
    let options = s3.options();
    let served = start_with(vec![("root".to_owned(), url)], None, |o| {
        o.session.storage = options;
    })
    .await;
    let r = query(served.addr, "SELECT count(*) AS n FROM summaries").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rows"], json!([[250]]));
    let t = get(served.addr, "/api/tree").await.json();
    assert_eq!(t["clusters"].as_array().unwrap().len(), 23);
    let o = get(served.addr, "/api/overview").await;
    assert_eq!(o.status, 200);
    // The credentials never show in an answer.
    assert!(!o.text().contains(&s3.secret));
}

/// A generated root whose texts hold markup: a top-level cluster's name and a summary of
/// that cluster. Returns (root, the planted text).
fn planted_root() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let run = common::ckpt([
        "generate",
        dir.path().to_str().unwrap(),
        "--summaries",
        "400",
        "--dim",
        "4",
        "--quiet",
    ])
    .expect_ok("generate");
    drop(run);
    let planted = "<img src=x onerror=\"window.__planted=1\"><b>bold</b>".to_owned();
    let rewrite =
        |file: &str, edit: &mut dyn FnMut(&mut serde_json::Map<String, Value>) -> bool| {
            let path = dir.path().join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let mut done = false;
            let lines: Vec<String> = text
                .lines()
                .map(|l| {
                    let mut v: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
                    if !done && edit(&mut v) {
                        done = true;
                    }
                    serde_json::to_string(&v).unwrap()
                })
                .collect();
            assert!(done, "nothing planted in {file}");
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        };
    let mut top_id = String::new();
    let mut first_chat = String::new();
    rewrite("meta_clusters.jsonl", &mut |v| {
        if v["parent_id"].is_null() && top_id.is_empty() {
            top_id = v["id"].as_str().unwrap().to_owned();
            // The first of the cluster's summaries on its page (sorted by chat id).
            first_chat = v["chat_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .min()
                .unwrap()
                .to_owned();
            v.insert("name".into(), json!(format!("Cluster {planted}")));
            return true;
        }
        false
    });
    rewrite("summaries.jsonl", &mut |v| {
        if v["chat_id"] == json!(first_chat) {
            v.insert("summary".into(), json!(format!("Summary {planted}")));
            return true;
        }
        false
    });
    (dir, planted)
}

/// The page in headless Chromium: the tree, the map, a cluster's summaries, the SQL box,
/// and markup planted in the checkpoints staying text. Screenshots go to
/// target/serve-screenshots/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_in_a_real_browser() {
    let python = std::env::var("CKPT_PYTHON").unwrap_or_else(|_| {
        panic!("CKPT_PYTHON is not set: run scripts/test, which provides Python with selenium, chromium and chromium-driver")
    });
    for tool in ["chromium", "chromedriver"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} is not installed: run scripts/test (it installs Debian's chromium and chromium-driver)"
        );
    }
    let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/serve-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/explorer.py");

    let (sample, _) = start_sample(|_| {}).await;
    let (planted_dir, planted) = planted_root();
    let root = planted_dir.path().to_str().unwrap().to_owned();
    let generated = start_with(vec![("root".to_owned(), root)], Some(planted_dir), |_| {}).await;
    for (name, served, planted) in [
        ("sample", &sample, None),
        ("planted", &generated, Some(planted.as_str())),
    ] {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(&script)
            .arg(format!("http://{}/", served.addr))
            .arg(screenshots.join(name));
        if let Some(p) = planted {
            cmd.env("CKPT_PLANTED", p);
        }
        let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
            .await
            .expect("the browser test ends within 4 minutes")
            .unwrap();
        assert!(
            out.status.success(),
            "browser test on the {name} root failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
