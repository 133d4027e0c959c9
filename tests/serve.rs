//! `inception serve` as a client sees it: the binary started on a free port, spoken to over
//! HTTP/1.1 on loopback, stopped with SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running server and its address.
struct Server {
    child: Child,
    addr: String,
    log: BufReader<std::process::ChildStderr>,
}

fn serve(dir: &std::path::Path, args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inception"))
        .args(["serve", "--port", "0", "--device", "cpu"])
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let addr = loop {
        let mut line = String::new();
        assert!(
            log.read_line(&mut line).unwrap() > 0,
            "serve ended before listening"
        );
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
    };
    Server { child, addr, log }
}

/// One HTTP/1.1 request; the status code and the body.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let text = raw(addr, method, path, body);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// One HTTP/1.1 request; the whole answer, status line and headers included.
fn raw(addr: &str, method: &str, path: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // A server may answer (413) before it has read a large body: a failed write is fine then.
    let _ = s.write_all(body);
    let mut answer = vec![];
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn serve_answers_as_predict_does_refuses_bad_requests_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::import_case(dir.path(), "googlenet_2", "Monkey Pox,Others", &[]);
    let ckpt = ckpt.to_str().unwrap();
    let mut server = serve(dir.path(), &["--checkpoint", ckpt, "--max-body-mib", "1"]);
    let addr = server.addr.clone();

    assert_eq!(request(&addr, "GET", "/healthz", b""), (200, "ok\n".into()));
    let (status, body) = request(&addr, "GET", "/v1/model", b"");
    assert_eq!(status, 200);
    let model: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        model["classes"],
        serde_json::json!(["Monkey Pox", "Others"])
    );
    assert_eq!(model["arch"], "googlenet");
    assert_eq!(model["image_size"], 224);

    // The same probabilities as predict --json, to the last bit, for several MSLD photos.
    let photos = common::repo().join("data/monkeypox/Monkey Pox");
    let mut files: Vec<_> = std::fs::read_dir(&photos)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files.iter().take(3) {
        let (status, body) = request(&addr, "POST", "/v1/predict", &std::fs::read(f).unwrap());
        assert_eq!(status, 200, "{body}");
        let served: Value = serde_json::from_str(&body).unwrap();
        let o = common::inception(
            dir.path(),
            &[
                "predict",
                "--json",
                "--device",
                "cpu",
                "--checkpoint",
                ckpt,
                f.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", common::stderr(&o));
        let predicted: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
        assert_eq!(served[0]["top_k"], predicted[0]["top_k"], "{f:?}");
        assert_eq!(served[0]["class"], predicted[0]["class"]);
    }
    let (status, body) = request(
        &addr,
        "POST",
        "/v1/predict?top_k=1",
        &std::fs::read(&files[0]).unwrap(),
    );
    assert_eq!(status, 200);
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one[0]["top_k"].as_array().unwrap().len(), 1);

    // Not an image, cut short, empty: 400 with the reason; too large: 413.
    let jpeg = std::fs::read(&files[0]).unwrap();
    for (bytes, reason) in [
        (b"hello".to_vec(), "not an image"),
        (jpeg[..jpeg.len() / 2].to_vec(), "truncated"),
        (vec![], "empty"),
    ] {
        let (status, body) = request(&addr, "POST", "/v1/predict", &bytes);
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(reason), "{body}");
    }
    let (status, body) = request(&addr, "POST", "/v1/predict", &vec![0u8; 2 << 20]);
    assert_eq!(status, 413);
    assert!(
        body.contains("\"error\"") && body.contains("length limit"),
        "{body}"
    );
    // None of that changed what a good request gets.
    let (status, body) = request(&addr, "POST", "/v1/predict", &jpeg);
    assert_eq!(status, 200, "{body}");

    // What /metrics counted: every request above, by route and status.
    let (status, text) = request(&addr, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    for (line, n) in [
        (
            "inception_requests_total{route=\"/healthz\",status=\"200\"}",
            1,
        ),
        (
            "inception_requests_total{route=\"/v1/model\",status=\"200\"}",
            1,
        ),
        (
            "inception_requests_total{route=\"/v1/predict\",status=\"200\"}",
            5,
        ),
        (
            "inception_requests_total{route=\"/v1/predict\",status=\"400\"}",
            3,
        ),
        (
            "inception_requests_total{route=\"/v1/predict\",status=\"413\"}",
            1,
        ),
        ("inception_batch_size_count", 5),
        ("inception_request_seconds_count", 11),
        ("inception_queue_depth", 0),
    ] {
        assert!(
            text.contains(&format!("{line} {n}\n")),
            "{line} {n} not in:\n{text}"
        );
    }

    // SIGTERM: stops, exit code 0.
    // SAFETY: signalling the child this test started.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = server.child.wait().unwrap();
    let mut rest = String::new();
    server.log.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("stopped"), "{rest}");
}

#[test]
fn concurrent_requests_are_answered_each_with_its_own_image() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::import_case(dir.path(), "seed_2", "Monkey Pox,Others", &[]);
    let mut server = serve(
        dir.path(),
        &[
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--max-wait-ms",
            "50",
        ],
    );
    let photos = common::repo().join("data/monkeypox/Others");
    let mut files: Vec<_> = std::fs::read_dir(&photos)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let files = &files[..8];
    let alone: Vec<Value> = files
        .iter()
        .map(|f| {
            let (s, b) = request(
                &server.addr,
                "POST",
                "/v1/predict",
                &std::fs::read(f).unwrap(),
            );
            assert_eq!(s, 200, "{b}");
            serde_json::from_str(&b).unwrap()
        })
        .collect();
    // Eight at once, gathered into batches: each answer is its own image's.
    let together: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| {
                let addr = server.addr.clone();
                s.spawn(move || {
                    let (st, b) = request(&addr, "POST", "/v1/predict", &std::fs::read(f).unwrap());
                    assert_eq!(st, 200, "{b}");
                    serde_json::from_str::<Value>(&b).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!(a[0]["class"], b[0]["class"]);
        let (pa, pb) = (
            a[0]["probability"].as_f64().unwrap(),
            b[0]["probability"].as_f64().unwrap(),
        );
        assert!((pa - pb).abs() <= 1e-5, "{pa} alone, {pb} in a batch");
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_recovers() {
    // One image at a time through GoogLeNet and room for one waiting: of 16 requests sent at
    // once (decoded in milliseconds, each tens of milliseconds in the network), some find the
    // queue full.
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::import_case(dir.path(), "googlenet_2", "Monkey Pox,Others", &[]);
    let mut server = serve(
        dir.path(),
        &[
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--max-queue",
            "1",
            "--max-batch",
            "1",
            "--max-wait-ms",
            "0",
        ],
    );
    let photo = std::fs::read(common::repo().join("data/monkeypox/Others/23_1.jpg")).unwrap();
    let answers: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (addr, photo) = (server.addr.clone(), &photo);
                s.spawn(move || raw(&addr, "POST", "/v1/predict", photo))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let full: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .collect();
    let ok = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 200"))
        .count();
    assert!(!full.is_empty(), "no request found the queue full");
    assert_eq!(ok + full.len(), 16, "{answers:?}");
    for a in &full {
        assert!(a.to_ascii_lowercase().contains("retry-after: 1"), "{a}");
        assert!(a.contains("the queue is full"), "{a}");
    }
    // Afterwards the server answers again.
    let (status, _) = request(&server.addr, "POST", "/v1/predict", &photo);
    assert_eq!(status, 200);
    let _ = server.child.kill();
    let _ = server.child.wait();
}
