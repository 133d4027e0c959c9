//! `inception serve` as a client sees it: the binary started on a free port, spoken to over
//! HTTP/1.1 on loopback, stopped with SIGTERM.

use crate::common;

use common::browser::Browser;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running server and its address.
struct Server {
    child: Child,
    addr: String,
    log: BufReader<std::process::ChildStderr>,
}

impl Drop for Server {
    /// A test that fails leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path, args: &[&str]) -> Server {
    let mut child = common::bin()
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

/// The PyTorch fixture `case` imported with MSLD's two classes and served with `args`; the
/// server and the checkpoint's path.
fn serve_case(dir: &std::path::Path, case: &str, args: &[&str]) -> (Server, String) {
    let ckpt = common::import_case(dir, case, "Monkey Pox,Others", &[]);
    let ckpt = ckpt.to_str().unwrap().to_string();
    let server = serve(dir, &[&["--checkpoint", ckpt.as_str()], args].concat());
    (server, ckpt)
}

/// One HTTP/1.1 request; the status code and the body.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let (status, _, body) = split_answer(&raw_bytes(addr, method, path, body));
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One HTTP/1.1 request; the whole answer, status line and headers included.
fn raw(addr: &str, method: &str, path: &str, body: &[u8]) -> String {
    String::from_utf8_lossy(&raw_bytes(addr, method, path, body)).into_owned()
}

#[test]
fn serve_answers_as_predict_does_refuses_bad_requests_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, ckpt) = serve_case(dir.path(), "googlenet_2", &["--max-body-mib", "1"]);
    let ckpt = ckpt.as_str();
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
    let files = photos("Monkey Pox");
    for f in files.iter().take(3) {
        let (status, body) = request(&addr, "POST", "/v1/predict", &std::fs::read(f).unwrap());
        assert_eq!(status, 200, "{body}");
        let served: Value = serde_json::from_str(&body).unwrap();
        let predicted = predict_json(dir.path(), ckpt, f);
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

    // SIGTERM while a request is in flight (its body still arriving): that request is
    // answered, new connections are not taken, exit code 0.
    let mut in_flight = TcpStream::connect(&addr).unwrap();
    write!(
        in_flight,
        "POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        jpeg.len()
    )
    .unwrap();
    in_flight.write_all(&jpeg[..100]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the child this test started.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        TcpStream::connect(&addr).is_err(),
        "a new connection was taken after SIGTERM"
    );
    in_flight.write_all(&jpeg[100..]).unwrap();
    let mut answer = vec![];
    in_flight.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("top_k"), "{answer}");
    let status = server.child.wait().unwrap();
    let mut rest = String::new();
    server.log.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("stopped"), "{rest}");
}

#[test]
fn concurrent_requests_are_answered_each_with_its_own_image() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = serve_case(dir.path(), "seed_2", &["--max-wait-ms", "50"]);
    let files: Vec<_> = photos("Others")[..4]
        .iter()
        .chain(&photos("Monkey Pox")[..4])
        .cloned()
        .collect();
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
    // Compared by the log of the least probable class, which a saturated top class leaves
    // telling: within batch-size rounding when the same photo, far apart for another photo.
    let least = |v: &Value| -> f64 {
        let top_k = v[0]["top_k"].as_array().unwrap();
        top_k[top_k.len() - 1]["probability"].as_f64().unwrap().ln()
    };
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!(a[0]["class"], b[0]["class"]);
        let d = (least(a) - least(b)).abs();
        assert!(d <= 1e-3, "{a} alone, {b} in a batch");
    }
    for (i, a) in alone.iter().enumerate() {
        for b in &alone[i + 1..] {
            let d = (least(a) - least(b)).abs();
            assert!(
                d > 1e-2,
                "two photos answered alike, so a swap would go unseen: {a} {b}"
            );
        }
    }
    // And the eight were batched: fewer batches than requests.
    let (_, text) = request(&server.addr, "GET", "/metrics", b"");
    let count: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("inception_batch_size_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(count < 16.0, "{count} batches for 16 images:\n{text}");
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_recovers() {
    // One image at a time through GoogLeNet and room for one waiting: of 16 requests sent at
    // once (decoded in milliseconds, each tens of milliseconds in the network), some find the
    // queue full.
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = serve_case(
        dir.path(),
        "googlenet_2",
        &["--max-queue", "1", "--max-batch", "1", "--max-wait-ms", "0"],
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
}

/// A `multipart/form-data` body of `files` (name, bytes) and its content type.
fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----inception-test-boundary";
    let mut body = vec![];
    for (name, bytes) in files {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// One HTTP/1.1 POST with a content type; the whole answer as bytes.
fn post_typed(addr: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    send(
        addr,
        "POST",
        path,
        &format!("Content-Type: {content_type}\r\n"),
        body,
    )
}

/// The status, the headers (lower-case) and the body of a whole answer.
fn split_answer(answer: &[u8]) -> (u16, String, Vec<u8>) {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(answer)));
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, answer[end + 4..].to_vec())
}

/// `inception predict --json` of one image on the CPU.
fn predict_json(dir: &std::path::Path, ckpt: &str, image: &std::path::Path) -> Value {
    let o = common::inception(
        dir,
        &[
            "predict",
            "--json",
            "--device",
            "cpu",
            "--checkpoint",
            ckpt,
            image.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    serde_json::from_str(&common::stdout(&o)).unwrap()
}

/// MSLD's photos of `class`, in name order.
fn photos(class: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(common::repo().join("data/monkeypox").join(class))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn multipart_uploads_and_explain_answer_as_the_commands_do() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ckpt) = serve_case(dir.path(), "googlenet_2", &["--precision", "fp32"]);
    let ckpt = ckpt.as_str();
    let addr = server.addr.clone();
    let (a, b) = (photos("Monkey Pox")[0].clone(), photos("Others")[0].clone());
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // Several files in one form: one prediction each, in order, named by file name, with the
    // probabilities each gets alone.
    let (ct, body) = multipart(&[("a.jpg", &bytes_a), ("b.jpg", &bytes_b)]);
    let (status, _, body) = split_answer(&post_typed(&addr, "/v1/predict?top_k=2", &ct, &body));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let both: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(both.as_array().unwrap().len(), 2);
    for (i, (name, bytes)) in [("a.jpg", &bytes_a), ("b.jpg", &bytes_b)]
        .iter()
        .enumerate()
    {
        assert_eq!(both[i]["path"], *name);
        let (s, alone) = request(&addr, "POST", "/v1/predict?top_k=2", bytes);
        assert_eq!(s, 200);
        let alone: Value = serde_json::from_str(&alone).unwrap();
        // Two images in one batch: the same as alone, up to the batch size's rounding.
        for (x, y) in both[i]["top_k"]
            .as_array()
            .unwrap()
            .iter()
            .zip(alone[0]["top_k"].as_array().unwrap())
        {
            assert_eq!(x["class"], y["class"], "{name}");
            let (p, q) = (
                x["probability"].as_f64().unwrap(),
                y["probability"].as_f64().unwrap(),
            );
            assert!((p - q).abs() <= 1e-6, "{name}: {p} in the form, {q} alone");
        }
    }
    // A form without a file, a field that is not a file, a form cut short: 400 with the reason.
    let (ct, _) = multipart(&[]);
    for (body, reason) in [
        (format!("--{}--\r\n", ct.split("boundary=").nth(1).unwrap()), "no file"),
        (
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{b}--\r\n",
                b = ct.split("boundary=").nth(1).unwrap()
            ),
            "\\\"note\\\" is not a file",
        ),
        ("garbage without a boundary".into(), "multipart"),
    ] {
        let (status, _, answer) =
            split_answer(&post_typed(&addr, "/v1/predict", &ct, body.as_bytes()));
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 400, "{answer}");
        assert!(answer.to_lowercase().contains(reason), "{reason}: {answer}");
    }
    // A bad image among good ones: 400 naming it.
    let (ct, body) = multipart(&[("a.jpg", &bytes_a), ("cut.jpg", &bytes_b[..100])]);
    let (status, _, answer) = split_answer(&post_typed(&addr, "/v1/predict", &ct, &body));
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("cut.jpg"), "{answer}");

    // /v1/explain: the overlay `inception explain` draws, pixel for pixel, for the predicted
    // class and for one asked for.
    let out = dir.path().join("explained");
    let o = common::inception(
        dir.path(),
        &[
            "explain",
            "--device",
            "cpu",
            "--checkpoint",
            ckpt,
            "--class",
            "Others",
            "--out",
            out.to_str().unwrap(),
            a.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let stem = a.file_stem().unwrap().to_str().unwrap();
    let cli = image::open(out.join(format!("{stem}.cam.png")))
        .unwrap()
        .to_rgb8();
    let (status, head, png) = split_answer(&raw_bytes(
        &addr,
        "POST",
        "/v1/explain?class=Others",
        &bytes_a,
    ));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    assert!(head.contains("content-type: image/png"), "{head}");
    assert!(head.contains("x-class: others"), "{head}");
    // X-Probability: the class's probability as /v1/predict gives it.
    let (_, predicted) = request(&addr, "POST", "/v1/predict?top_k=2", &bytes_a);
    let predicted: Value = serde_json::from_str(&predicted).unwrap();
    let others = predicted[0]["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["class"] == "Others")
        .unwrap()["probability"]
        .as_f64()
        .unwrap() as f32;
    let header: f32 = head
        .lines()
        .find_map(|l| l.strip_prefix("x-probability: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(header, others, "{head}");
    let served = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(served.dimensions(), cli.dimensions());
    let differ = served
        .pixels()
        .zip(cli.pixels())
        .filter(|(p, q)| p != q)
        .count();
    assert_eq!(differ, 0, "{differ} pixels differ from inception explain's");

    // The default class is the predicted one; what explain cannot do is refused by name.
    let (_, predicted) = request(&addr, "POST", "/v1/predict", &bytes_a);
    let predicted: Value = serde_json::from_str(&predicted).unwrap();
    let (status, head, _) = split_answer(&raw_bytes(
        &addr,
        "POST",
        "/v1/explain?method=gradcam%2B%2B&layer=inception4e",
        &bytes_a,
    ));
    assert_eq!(status, 200);
    let class = predicted[0]["class"].as_str().unwrap().to_ascii_lowercase();
    assert!(head.contains(&format!("x-class: {class}")), "{head}");
    for (query, reason) in [
        ("?class=Cowpox", "\"Cowpox\" is not a class"),
        ("?layer=fc", "\"fc\" is not a layer"),
        ("?method=lime", "\"lime\": expected gradcam or gradcam++"),
    ] {
        let (status, body) = request(&addr, "POST", &format!("/v1/explain{query}"), &bytes_a);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body.contains(&reason.replace('"', "\\\"")),
            "{query}: {body}"
        );
    }
    let (ct, body) = multipart(&[("a.jpg", &bytes_a), ("b.jpg", &bytes_b)]);
    let (status, _, answer) = split_answer(&post_typed(&addr, "/v1/explain", &ct, &body));
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&answer).contains("one image, not 2"));

    // A path that is no endpoint, a method an endpoint does not take, a query that does not
    // parse: JSON like every error.
    for (method, path, status, reason) in [
        ("GET", "/v2/predict", 404, "no such endpoint"),
        (
            "GET",
            "/v1/predict",
            405,
            "not a method this endpoint takes",
        ),
        ("POST", "/v1/predict?top_k=many", 400, "top_k"),
    ] {
        let (got, body) = request(&addr, method, path, &bytes_a);
        assert_eq!(got, status, "{method} {path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
    }

    // The page: self-contained (nothing fetched from elsewhere), with its file input.
    let (status, page) = request(&addr, "GET", "/", b"");
    assert_eq!(status, 200);
    assert!(page.contains("<input id=\"file\" type=\"file\""), "{page}");
    for outside in ["http://", "https://", "src=\"//", "href=\"//"] {
        assert!(!page.contains(outside), "the page refers to {outside}");
    }
}

/// One HTTP/1.1 request; the whole answer as bytes.
fn raw_bytes(addr: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    send(addr, method, path, "", body)
}

/// One HTTP/1.1 request with extra header lines (each ending in CRLF); the whole answer.
fn send(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // A server may answer (413) before it has read a large body: a failed write is fine then.
    let _ = s.write_all(body);
    let mut answer = vec![];
    let _ = s.read_to_end(&mut answer);
    answer
}

/// Sends the head of a request, then `body` one byte per 100 ms until the server answers or
/// closes the connection; the answer (empty: closed without one). Gives up after 20 s.
fn dribble(addr: &str, head: &str, body: &[u8]) -> String {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut answer = vec![];
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if answer.is_empty() && e.kind() == std::io::ErrorKind::WouldBlock => {
                if started.elapsed() > Duration::from_secs(20) {
                    return "no answer within 20 s".into();
                }
                if sent < body.len() && s.write_all(&body[sent..sent + 1]).is_ok() {
                    sent += 1;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn valid_requests_keep_succeeding_among_malformed_truncated_oversized_and_slow_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = serve_case(
        dir.path(),
        "seed_2",
        &["--max-body-mib", "1", "--read-timeout-s", "2"],
    );
    let addr = server.addr.clone();
    let photo = std::fs::read(&photos("Others")[0]).unwrap();
    let (status, first) = request(&addr, "POST", "/v1/predict", &photo);
    assert_eq!(status, 200, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();

    let bomb = common::png_header_claiming(60_000, 60_000);
    let post = |headers: &str| format!("POST /v1/predict HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
    // (what is sent, how: whole or dribbled, the status expected, a word of the reason)
    let faults: Vec<(String, Vec<u8>, bool, &str, &str)> = vec![
        ("GARBAGE\r\n\r\n".into(), vec![], false, "400", ""),
        (
            post("Transfer-Encoding: chunked\r\n"),
            b"zz\r\nhello\r\n0\r\n\r\n".to_vec(),
            false,
            "400",
            "",
        ),
        (
            post("Content-Length: 100\r\nConnection: close\r\n"),
            photo[..50].to_vec(),
            false,
            "400",
            "",
        ),
        (
            post(&format!(
                "Content-Length: {}\r\nConnection: close\r\n",
                photo.len() / 2
            )),
            photo[..photo.len() / 2].to_vec(),
            false,
            "400",
            "truncated",
        ),
        (
            post(&format!(
                "Content-Length: {}\r\nConnection: close\r\n",
                2 << 20
            )),
            vec![0; 2 << 20],
            false,
            "413",
            "length limit",
        ),
        (
            post("Transfer-Encoding: chunked\r\nConnection: close\r\n"),
            [
                format!("{:x}\r\n", 1 << 20).as_bytes(),
                &vec![0u8; 1 << 20],
                b"\r\n",
            ]
            .concat()
            .repeat(2),
            false,
            "413",
            "length limit",
        ),
        (
            post(&format!(
                "Content-Length: {}\r\nConnection: close\r\n",
                bomb.len()
            )),
            bomb.clone(),
            false,
            "400",
            "limit",
        ),
        (
            post("Content-Length: 1000\r\nConnection: close\r\n"),
            photo[..1000].to_vec(),
            true,
            "408",
            "did not arrive within 2 s",
        ),
        // Headers one byte at a time: the server closes the connection after 2 s.
        (
            "POST /v1/predict HTTP/1.1\r\n".into(),
            b"Host: t\r\nX-Slow: one-byte-per-100-ms-for-longer-than-the-timeout\r\n".to_vec(),
            true,
            "",
            "",
        ),
    ];
    let done = std::sync::atomic::AtomicUsize::new(0);
    let (answers, valid) = std::thread::scope(|sc| {
        let handles: Vec<_> = faults
            .iter()
            .map(|(head, body, slow, _, _)| {
                let (addr, done) = (&addr, &done);
                sc.spawn(move || {
                    let started = Instant::now();
                    let answer = if *slow {
                        dribble(addr, head, body)
                    } else {
                        let mut s = TcpStream::connect(addr).unwrap();
                        s.write_all(head.as_bytes()).unwrap();
                        let _ = s.write_all(body);
                        let _ = s.shutdown(std::net::Shutdown::Write);
                        let mut a = vec![];
                        let _ = s.read_to_end(&mut a);
                        String::from_utf8_lossy(&a).into_owned()
                    };
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (answer, started.elapsed())
                })
            })
            .collect();
        // Meanwhile, valid requests one after another: every one answered, as the first was.
        let mut valid = 0;
        while done.load(std::sync::atomic::Ordering::SeqCst) < faults.len() {
            let (status, body) = request(&addr, "POST", "/v1/predict", &photo);
            assert_eq!(status, 200, "{body}");
            let answer: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer[0]["top_k"], first[0]["top_k"]);
            valid += 1;
        }
        let answers: Vec<(String, Duration)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        (answers, valid)
    });
    assert!(
        valid >= 5,
        "only {valid} valid requests while the faults ran"
    );
    for ((head, body, slow, status, reason), (answer, took)) in faults.iter().zip(&answers) {
        // A slow client is cut off at the 2 s timeout, long before it would have finished.
        if *slow {
            let would_take = Duration::from_millis(100 * body.len() as u64);
            assert!(
                *took < Duration::from_secs(4) && *took < would_take,
                "{head:?}: {took:?} (sending it all takes {would_take:?})"
            );
        }
        let first_line = head.lines().next().unwrap_or("");
        if !status.is_empty() {
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{head:?} …: expected {status}, got {answer:?}"
            );
        }
        assert!(
            answer.contains(reason),
            "{first_line} …: {reason:?} not in {answer:?}"
        );
        assert!(
            !answer.contains("no answer within"),
            "{first_line} …: {answer}"
        );
    }
    // And afterwards.
    let (status, body) = request(&addr, "POST", "/v1/predict", &photo);
    assert_eq!(status, 200, "{body}");
}

/// A script for [`Browser::wait_for`]: null while the page works on a photo; then `{error}`,
/// or the bars as `rows` of `[class, probability]`, the status line, the file's name and the
/// heat-map's size once it has loaded.
const SHOWN: &str = "const cam = document.getElementById('cam'); \
     const error = document.getElementById('error').textContent; \
     if (error) return {error}; \
     if (cam.hidden || !cam.complete || cam.naturalWidth === 0) return null; \
     return {rows: [...document.querySelectorAll('#result .row')].map(r => \
               [r.dataset.class, Number(r.dataset.probability)]), \
             status: document.getElementById('status').textContent, \
             name: document.getElementById('name').textContent, \
             cam: [cam.naturalWidth, cam.naturalHeight]};";

/// The page's bars, from what [`SHOWN`] returned.
fn bars(shown: &Value) -> Vec<(String, f64)> {
    shown["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_f64().unwrap()))
        .collect()
}

/// `inception predict --json`'s classes and probabilities of its first image.
fn top_k(predicted: &Value) -> Vec<(String, f64)> {
    predicted[0]["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["class"].as_str().unwrap().to_string(),
                x["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_page_in_chromium_shows_predict_s_answer_and_the_heat_map_of_a_photo() {
    let dir = tempfile::tempdir().unwrap();
    // A calibrated checkpoint whose conformal thresholds hold every class: "cannot tell".
    let raw = common::import_case(dir.path(), "googlenet_2", "Monkey Pox,Others", &[]);
    let cal = dir.path().join("calibrated.pt");
    with_trust(&raw, &cal, 2.0, 0.5, [1.0, 1.0]);
    let ckpt = cal.to_str().unwrap();
    let server = serve(dir.path(), &["--checkpoint", ckpt]);
    let photo = photos("Monkey Pox")[1].clone();
    let predicted = predict_json(dir.path(), ckpt, &photo);

    let browser = Browser::start();
    browser.session_call(
        "POST",
        "/url",
        serde_json::json!({"url": format!("http://{}/", server.addr)}),
    );
    let about = browser.wait_for(
        "const t = document.getElementById('about').textContent; \
         return t.includes('googlenet') ? t : null;",
    );
    assert!(
        about.as_str().unwrap().contains("Monkey Pox, Others"),
        "{about}"
    );
    assert!(
        about
            .as_str()
            .unwrap()
            .contains("probabilities calibrated: temperature 2.000"),
        "{about}"
    );

    // A photo chosen: the bars show predict's classes and probabilities, then the heat-map.
    browser.choose_file(&photo);
    let shown = browser.wait_for(SHOWN);
    assert!(shown["error"].is_null(), "the page shows an error: {shown}");
    assert_eq!(bars(&shown), top_k(&predicted), "{shown}");
    let class = predicted[0]["class"].as_str().unwrap();
    assert!(
        shown["status"].as_str().unwrap().starts_with(class),
        "{shown}"
    );
    assert!(shown["cam"][0].as_u64().unwrap() >= 224, "{shown}");
    // The decision at the threshold and the set, as predict gives them.
    let verdict = browser.wait_for(
        "const v = document.getElementById('verdict'); \
         return v.textContent ? {text: v.textContent, decision: v.dataset.decision, \
         set: v.dataset.set} : null;",
    );
    assert_eq!(verdict["decision"], predicted[0]["decision"], "{verdict}");
    assert_eq!(verdict["set"], "Monkey Pox|Others", "{verdict}");
    assert!(
        verdict["text"]
            .as_str()
            .unwrap()
            .contains("cannot tell: refer to a clinician"),
        "{verdict}"
    );
    assert!(
        shown["status"].as_str().unwrap().contains("(calibrated)"),
        "{shown}"
    );
    let shot = browser.screenshot("serve-page.png");
    let shot = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(shot.width(), 1100, "a screenshot of the window");

    // Not a photo: the reason in words, and no bars.
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "these are notes, not a photo").unwrap();
    browser.choose_file(&text);
    let error = browser
        .wait_for("const e = document.getElementById('error').textContent; return e ? e : null;");
    let error = error.as_str().unwrap();
    assert!(
        error.contains("notes.jpg") && error.contains("not an image"),
        "{error}"
    );
    assert!(error.contains("HTTP 400"), "{error}");
    let rows = browser.wait_for("return document.querySelectorAll('#result .row').length;");
    assert_eq!(rows, 0);
    browser.screenshot("serve-page-error.png");

    // A photo dropped on the drop zone (a drop event carrying the file, as the browser makes
    // one when a file is dragged there): classified like a chosen one.
    use base64::Engine;
    let other = photos("Others")[0].clone();
    let predicted = predict_json(dir.path(), ckpt, &other);
    let bytes = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&other).unwrap());
    browser.session_call(
        "POST",
        "/execute/sync",
        serde_json::json!({
            "script": "const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0)); \
                       const dt = new DataTransfer(); \
                       dt.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'})); \
                       document.getElementById('drop').dispatchEvent(new DragEvent('drop', \
                           {dataTransfer: dt, bubbles: true, cancelable: true})); \
                       return true;",
            "args": [bytes],
        }),
    );
    let shown = browser.wait_for(SHOWN);
    assert!(shown["error"].is_null(), "the page shows an error: {shown}");
    assert_eq!(shown["name"], "dropped.jpg", "{shown}");
    assert_eq!(bars(&shown), top_k(&predicted), "{shown}");
    browser.screenshot("serve-page-dropped.png");
    drop(browser);
}

/// `ckpt` rewritten as `out` carrying a calibration: temperature `t`, screening threshold
/// `threshold`, and per-class LAC thresholds `sets`.
fn with_trust(
    ckpt: &std::path::Path,
    out: &std::path::Path,
    t: f64,
    threshold: f64,
    sets: [f64; 2],
) {
    use inception::trust::conformal::{Conformal, ScoreKind};
    use inception::trust::{Temperature, Threshold, TrustRecord};
    let mut c = inception::checkpoint::load(ckpt, tch::Device::Cpu).unwrap();
    let classes = c.meta.classes.clone();
    c.meta.trust = Some(TrustRecord {
        fitted_on: "a test's made-up out-of-fold predictions".into(),
        classes: classes.clone(),
        calibration: Some(Temperature {
            temperature: t,
            applied: true,
        }),
        threshold: Some(Threshold {
            positive_class: classes[0].clone(),
            threshold,
            target_sensitivity: 0.95,
        }),
        conformal: Some(Conformal {
            alpha: 0.1,
            score: ScoreKind::Lac,
            class_conditional: true,
            thresholds: sets.to_vec(),
            calibration_images: vec![50, 50],
        }),
    });
    inception::checkpoint::save(out, &c.model, &c.meta).unwrap();
}

#[test]
fn predict_eval_and_serve_agree_on_the_calibrated_probability_decision_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let old = common::import_case(
        dir.path(),
        "seed_2",
        "Monkey Pox,Others",
        &["--image-size", "64"],
    );
    // Ten photos of each class, in class folders for eval.
    let data = dir.path().join("data");
    let mut files = vec![];
    for class in ["Monkey Pox", "Others"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for f in photos(class).iter().take(10) {
            let to = data.join(class).join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            files.push(to);
        }
    }
    // A checkpoint made before calibration existed: uncalibrated, and it says so.
    let before = predict_json(dir.path(), old.to_str().unwrap(), &files[0]);
    assert_eq!(before[0]["calibrated"], false);
    assert!(before[0]["set"].is_null());
    assert_eq!(before[0]["threshold"], 0.5);
    let o = common::inception(
        dir.path(),
        &[
            "predict",
            "--device",
            "cpu",
            "--checkpoint",
            old.to_str().unwrap(),
            files[0].to_str().unwrap(),
        ],
    );
    assert!(
        common::stderr(&o)
            .contains("probabilities: uncalibrated (the checkpoint carries no calibration)"),
        "{}",
        common::stderr(&o)
    );

    let cal = dir.path().join("calibrated.pt");
    let cal_s = cal.to_str().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut args = vec![
        "predict",
        "--json",
        "--device",
        "cpu",
        "--checkpoint",
        cal_s,
    ];
    args.extend(&paths);
    let prob = |p: &Value, class: &str| -> f64 {
        p["top_k"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["class"] == class)
            .unwrap()["probability"]
            .as_f64()
            .unwrap()
    };
    // Set thresholds from these photos' calibrated probabilities: the lowest quarter of
    // P(Monkey Pox) gets {Others}, the highest quarter {Monkey Pox}, the middle both.
    let t = 2.5;
    with_trust(&old, &cal, t, 0.5, [1.0, 1.0]);
    let o = common::inception(dir.path(), &args);
    let first: Vec<Value> = serde_json::from_str(&common::stdout(&o)).unwrap();
    let mut mp: Vec<f64> = first.iter().map(|p| prob(p, "Monkey Pox")).collect();
    mp.sort_by(f64::total_cmp);
    let (q1, q3) = ((mp[4] + mp[5]) / 2.0, (mp[14] + mp[15]) / 2.0);
    let (threshold, sets) = ((mp[9] + mp[10]) / 2.0, [1.0 - q1, q3]);
    with_trust(&old, &cal, t, threshold, sets);
    let o = common::inception(dir.path(), &args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("probabilities: calibrated: temperature 2.500"),
        "{}",
        common::stderr(&o)
    );
    let predicted: Vec<Value> = serde_json::from_str(&common::stdout(&o)).unwrap();
    args.insert(2, "--no-calibration");
    let o = common::inception(dir.path(), &args);
    let raw: Vec<Value> = serde_json::from_str(&common::stdout(&o)).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for (p, r) in predicted.iter().zip(&raw) {
        assert_eq!(p["calibrated"], true);
        assert_eq!(r["calibrated"], false);
        // --no-calibration shows the raw probabilities; decisions and sets stay on the scale
        // their thresholds were fitted on.
        assert_eq!(r["decision"], p["decision"]);
        assert_eq!(r["set"], p["set"]);
        // softmax(z / T) from the raw probabilities: log p = z − c.
        let (a, b) = (prob(r, "Monkey Pox").ln() / t, prob(r, "Others").ln() / t);
        let want = 1.0 / (1.0 + (b - a).exp());
        let got = prob(p, "Monkey Pox");
        assert!(
            (got - want).abs() < 1e-6,
            "calibrated {got} vs softmax(z/T) {want}"
        );
        let decision = if got >= threshold {
            "Monkey Pox"
        } else {
            "Others"
        };
        assert_eq!(p["decision"], decision, "{p}");
        let mut set = vec![];
        if 1.0 - got <= sets[0] {
            set.push("Monkey Pox");
        }
        if 1.0 - prob(p, "Others") <= sets[1] {
            set.push("Others");
        }
        assert_eq!(p["set"], serde_json::json!(set), "{p}");
        kinds.insert(set.len());
    }
    assert_eq!(
        kinds.len(),
        2,
        "the photos give sets of one size only: {kinds:?}"
    );

    // eval's per-image answers are predict's; its report measures them.
    let csv = dir.path().join("eval.csv");
    let o = common::inception(
        dir.path(),
        &[
            "eval",
            "--json",
            "--device",
            "cpu",
            "--checkpoint",
            cal_s,
            "--data",
            data.to_str().unwrap(),
            "--predictions",
            csv.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let e: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    assert_eq!(e["calibrated"], true);
    assert_eq!(e["calibration"]["temperature"], 2.5);
    assert_eq!(e["operating_point"]["threshold"], threshold);
    assert_eq!(e["conformal"]["thresholds"], serde_json::json!(sets));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    let mut covered = 0;
    for row in &rows {
        let i = paths
            .iter()
            .position(|p| *p == row[0])
            .unwrap_or_else(|| panic!("{} not predicted", row[0]));
        let p = &predicted[i];
        let mp: f64 = row[2].parse().unwrap();
        assert!(
            (mp - prob(p, "Monkey Pox")).abs() < 1e-6,
            "{}: eval {mp} vs predict {}",
            row[0],
            prob(p, "Monkey Pox")
        );
        assert_eq!(p["decision"], row[4]);
        let set: Vec<&str> = if row[5].is_empty() {
            vec![]
        } else {
            row[5].split('|').collect()
        };
        assert_eq!(p["set"], serde_json::json!(set));
        covered += set.contains(&row[1].as_str()) as usize;
    }
    let coverage = e["conformal"]["coverage"].as_f64().unwrap();
    assert!((coverage - covered as f64 / rows.len() as f64).abs() < 1e-12);
    let tp = rows
        .iter()
        .filter(|r| r[1] == "Monkey Pox" && r[4] == "Monkey Pox")
        .count();
    let sens = e["operating_point"]["sensitivity"]["value"]
        .as_f64()
        .unwrap();
    assert!(
        (sens - tp as f64 / 10.0).abs() < 1e-12,
        "sensitivity {sens} vs {tp}/10"
    );

    // serve answers the same.
    let mut server = serve(dir.path(), &["--checkpoint", cal_s]);
    let (status, body) = request(&server.addr, "GET", "/v1/model", b"");
    assert_eq!(status, 200);
    let model: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(model["calibrated"], true);
    assert_eq!(model["threshold"], threshold);
    for (f, p) in files.iter().zip(&predicted).take(6) {
        let (status, body) = request(
            &server.addr,
            "POST",
            "/v1/predict",
            &std::fs::read(f).unwrap(),
        );
        assert_eq!(status, 200, "{body}");
        let served: Value = serde_json::from_str(&body).unwrap();
        for key in ["calibrated", "decision", "set", "threshold", "class"] {
            assert_eq!(served[0][key], p[key], "{key} for {f:?}");
        }
        assert!((prob(&served[0], "Monkey Pox") - prob(p, "Monkey Pox")).abs() < 1e-6);
    }
    let _ = server.child.kill();
    let _ = &mut server;

    // --threshold overrides the recorded one; refused outside [0, 1].
    let o = common::inception(
        dir.path(),
        &[
            "predict",
            "--json",
            "--device",
            "cpu",
            "--threshold",
            "0",
            "--checkpoint",
            cal_s,
            paths[0],
        ],
    );
    let v: Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    assert_eq!(v[0]["decision"], "Monkey Pox");
    assert_eq!(v[0]["threshold"], 0.0);
    let o = common::inception(
        dir.path(),
        &[
            "predict",
            "--device",
            "cpu",
            "--threshold",
            "1.5",
            "--checkpoint",
            cal_s,
            paths[0],
        ],
    );
    let err = common::assert_clean_failure(&o);
    assert!(err.contains("--threshold 1.5 is outside [0, 1]"), "{err}");
}
