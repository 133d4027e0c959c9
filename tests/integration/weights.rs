//! Weights from outside: PyTorch's torch.save files (zip and legacy) read natively and
//! checked against PyTorch's own tensors, the refusals (code, TorchScript, broken storages,
//! absurd sizes and nesting), EfficientNet-Lite0 against its reference with the published
//! weights, `--pretrained`, and the URL download and cache against a server on 127.0.0.1.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::{
    assert_clean_failure, inception, python, repo, script_output, serial, stderr, stdout,
};
use inception::checkpoint;
use inception::model::{Arch, Model, NetConfig};
use inception::weights::{self, hub};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// The files scripts/pth_fixtures.py writes, made once per version of the script.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| script_output("pth_fixtures.py", "pth", "list.pth"))
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn assert_same_tensors(got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(g.kind(), w.kind(), "{k}");
        assert_eq!(g.size(), w.size(), "{k}");
        assert!(g.equal(w), "{k}: {g:?} vs {w:?}");
    }
}

#[test]
fn zip_and_legacy_torch_save_files_hold_exactly_pytorchs_tensors() {
    // Mixed dtypes (f64, f16, bf16, i64, u8, bool, 0-d), a transposed view, two views of one
    // storage: compared with the same tensors that PyTorch wrote as safetensors.
    let want = checkpoint::read_safetensors(&fixture("small.safetensors"))
        .unwrap()
        .tensors;
    for f in [
        "small.zip.pth",
        "small.legacy.pth",
        "small.p4.zip.pth",
        "small.p4.legacy.pth",
        "nested.pth",
    ] {
        let got = weights::read_state_dict(&fixture(f)).unwrap();
        assert_same_tensors(&got, &want);
    }
    assert_eq!(want["transposed"].size(), [6, 4]);
    assert_eq!(want["bf16"].kind(), Kind::BFloat16);
}

fn classes_1000(dir: &Path) -> PathBuf {
    let path = dir.join("classes.txt");
    let names: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
    fs::write(&path, names.join("\n")).unwrap();
    path
}

#[test]
fn a_legacy_googlenet_file_imports_without_python_and_gives_pytorchs_logits() {
    // The layout of torchvision's googlenet-1378be20.pth: the legacy stream, aux heads in it.
    let dir = tempfile::tempdir().unwrap();
    let classes = classes_1000(dir.path());
    let o = inception(
        dir.path(),
        &[
            "import",
            "--arch",
            "googlenet",
            "--weights",
            fixture("googlenet.legacy.pth").to_str().unwrap(),
            "--classes-file",
            classes.to_str().unwrap(),
            "--transform-input",
            "--out",
            "g.pt",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("auxiliary heads kept"),
        "{}",
        stdout(&o)
    );
    let ckpt = checkpoint::load(&dir.path().join("g.pt"), Device::Cpu).unwrap();
    let mut io = checkpoint::read_safetensors(&fixture("googlenet.io.safetensors"))
        .unwrap()
        .tensors;
    let (x, want) = (io.remove("input").unwrap(), io.remove("logits").unwrap());
    let got = tch::no_grad(|| ckpt.model.forward_t(&x, false).unwrap().logits);
    let err = common::relative_error(&got, &want);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn code_torchscript_broken_storages_and_absurd_files_are_refused_by_name_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty.pth"), b"").unwrap();
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(dir.path().join("random.pth"), &random).unwrap();
    let mut zip_cut = fs::read(fixture("small.zip.pth")).unwrap();
    zip_cut.truncate(zip_cut.len() / 2);
    fs::write(dir.path().join("cut.zip.pth"), &zip_cut).unwrap();
    let local = |n: &str| dir.path().join(n);
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            fixture("evil.pth"),
            "byte 180: global posix.system is not one a state_dict needs",
        ),
        (fixture("scripted.pt"), "a TorchScript archive"),
        (
            fixture("past_storage.pth"),
            "needs 18 elements, but storage",
        ),
        (
            fixture("expanded.pth"),
            "would take 8589934592 bytes, more than the whole file",
        ),
        (
            fixture("many_views.pth"),
            "its tensors would take more than",
        ),
        (fixture("deep.pth"), "nested deeper than 32 levels"),
        (
            fixture("truncated.legacy.pth"),
            "extends beyond the end of the file",
        ),
        (
            fixture("list.pth"),
            "the file holds a list, not a dict of tensors",
        ),
        (local("empty.pth"), "the file is empty"),
        (
            local("random.pth"),
            "neither a safetensors file nor a PyTorch",
        ),
        (local("cut.zip.pth"), "not a readable zip archive"),
    ];
    for (file, reason) in cases {
        let o = inception(
            dir.path(),
            &[
                "import",
                "--arch",
                "seed",
                "--weights",
                file.to_str().unwrap(),
                "--classes",
                "a,b",
                "--out",
                "x.pt",
            ],
        );
        let err = assert_clean_failure(&o);
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains(reason), "{}: {err}", file.display());
        assert!(!dir.path().join("x.pt").exists());
    }
    // The os.system call would have made this file in the working folder.
    assert!(!dir.path().join("pwned").exists());
}

#[test]
fn a_pth_of_another_architecture_lists_every_misfit() {
    let dir = tempfile::tempdir().unwrap();
    let o = inception(
        dir.path(),
        &[
            "train",
            "--config",
            repo().join("configs/smoke.json").to_str().unwrap(),
            "--arch",
            "efficientnet_lite0",
            "--init",
            fixture("googlenet.legacy.pth").to_str().unwrap(),
            "--data",
            repo().join("data/monkeypox").to_str().unwrap(),
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("--init"), "{err}");
    assert!(
        err.contains("do not fit the efficientnet_lite0 backbone"),
        "{err}"
    );
    assert!(err.contains("245 missing: _blocks.0._bn1.bias, "), "{err}");
    assert!(err.contains("364 unexpected: aux1.conv.bn.bias, "), "{err}");
    assert!(err.contains("aux1.fc2.weight, and 354 more"), "{err}");
    assert!(
        !dir.path().join("runs").exists()
            || fs::read_dir(dir.path().join("runs"))
                .unwrap()
                .all(|e| { !e.unwrap().path().join("model.pt").exists() })
    );
}

/// The published EfficientNet-Lite0 file, where scripts/deps.sh puts it.
fn lite0_file() -> PathBuf {
    let p = inception::model::published(Arch::EfficientnetLite0).unwrap();
    let path = hub::cache_dir().unwrap().join(p.file);
    assert!(
        path.is_file(),
        "{} is missing: scripts/deps.sh (make test) installs it",
        path.display()
    );
    path
}

#[test]
fn efficientnet_lite0_with_the_published_weights_gives_the_references_probabilities() {
    let file = lite0_file();
    let dir = tempfile::tempdir().unwrap();
    let o = python()
        .arg(repo().join("scripts/pth_fixtures.py"))
        .args(["--out", dir.path().to_str().unwrap(), "--lite0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut io = checkpoint::read_safetensors(&dir.path().join("lite0.io.safetensors"))
        .unwrap()
        .tensors;
    let (x, want) = (io.remove("input").unwrap(), io.remove("logits").unwrap());
    let mut model = Model::new(NetConfig::new(Arch::EfficientnetLite0, 1000), Device::Cpu).unwrap();
    // The layer account agrees with PyTorch's count (forward hooks on every Conv2d and Linear).
    let s = model.summary(224).unwrap();
    assert_eq!(s.total_params, io["params"].int64_value(&[]));
    assert_eq!(s.total_params, model.num_params());
    assert_eq!(s.total_macs, io["macs"].int64_value(&[]));
    let sd = weights::read_state_dict(&file).unwrap();
    assert_eq!(sd.len(), 296);
    model.load_state_dict(&sd).unwrap();
    let logits = tch::no_grad(|| model.forward_t(&x, false).unwrap().logits);
    let (p, q) = (
        logits.softmax(-1, Kind::Float),
        want.softmax(-1, Kind::Float),
    );
    let diff = (&p - &q).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "probabilities differ by {diff}");
    assert!(common::relative_error(&logits, &want) < 1e-4);
    // The real weights are confident about something: parity with them means something.
    assert!(q.max().double_value(&[]) > 0.1);
    // Folded BatchNorm (eval and predict) and channels-last keep them.
    model.fold_batchnorm().unwrap();
    model.to_channels_last().unwrap();
    let folded = tch::no_grad(|| model.forward_t(&x, false).unwrap().logits);
    let diff = (folded.softmax(-1, Kind::Float) - &q)
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-5, "folded: probabilities differ by {diff}");
}

// ---------- --pretrained ----------

#[test]
fn pretrained_with_seed_or_with_init_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["train", "--arch", "seed", "--pretrained"],
        vec!["cv", "--arch", "seed", "--pretrained"],
        vec!["train", "--pretrained", "--init", "x.pth"],
        vec![
            "import",
            "--arch",
            "seed",
            "--pretrained",
            "--classes",
            "a,b",
            "--out",
            "o.pt",
        ],
    ] {
        let o = inception(dir.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("--pretrained"), "{args:?}: {err}");
    }
}

/// `inception train` on `data` with the smoke config, Lite0 at 32 px, and `extra` flags.
#[test]
fn a_frozen_backbone_drops_no_connections_in_training() {
    tch::manual_seed(3);
    let published = weights::read_state_dict(&lite0_file()).unwrap();
    let mut model = Model::new(NetConfig::new(Arch::EfficientnetLite0, 1000), Device::Cpu).unwrap();
    model.load_state_dict(&published).unwrap();
    model.freeze_bn = true;
    model.dropout = Some(0.0);
    let x = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
    let run = |m: &Model, train: bool| tch::no_grad(|| m.forward_t(&x, train).unwrap().logits);
    let eval = run(&model, false);
    // Thawed, drop-connect drops whole residual branches per image: training differs from eval.
    let e = common::relative_error(&run(&model, true), &eval);
    assert!(e > 1e-3, "{e}");
    model.frozen_backbone = true;
    for _ in 0..3 {
        let e = common::relative_error(&run(&model, true), &eval);
        assert!(e < 1e-6, "{e}");
    }
}

fn train_lite0(dir: &Path, data: &Path, out: &str, extra: &[&str]) -> Output {
    let smoke = repo().join("configs/smoke.json");
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--config",
        smoke.to_str().unwrap(),
        "--arch",
        "efficientnet_lite0",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--group-by",
        "none",
        "--no-plots",
        "--out",
        out,
    ];
    args.extend(extra);
    inception(dir, &args)
}

#[test]
fn a_frozen_epoch_trains_the_class_layer_only_and_the_backbone_then_learns() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = common::light_and_dark(dir.path(), 32);
    let published = weights::read_state_dict(&lite0_file()).unwrap();
    let o = train_lite0(
        dir.path(),
        &data,
        "frozen",
        &[
            "--pretrained",
            "--offline",
            "--epochs",
            "1",
            "--freeze-epochs",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("start fresh (_fc.bias, _fc.weight)"),
        "{}",
        stdout(&o)
    );
    let frozen = checkpoint::load(&dir.path().join("frozen/model.pt"), Device::Cpu).unwrap();
    let sd = frozen.model.state_dict();
    for (k, t) in &sd {
        if k.starts_with("_fc.") {
            continue;
        }
        // Weights and BatchNorm statistics alike (counters aside) are the published ones.
        if !k.ends_with("num_batches_tracked") {
            assert!(t.equal(&published[k]), "{k} moved in a frozen epoch");
        }
    }
    let o = train_lite0(
        dir.path(),
        &data,
        "thawed",
        &[
            "--pretrained",
            "--epochs",
            "2",
            "--freeze-epochs",
            "1",
            "--backbone-lr-mult",
            "0.5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let thawed = checkpoint::load(&dir.path().join("thawed/model.pt"), Device::Cpu).unwrap();
    let w = "_blocks.3._depthwise_conv.weight";
    assert!(!thawed.model.state_dict()[w].equal(&published[w]));
    // Grad-CAM looks at Lite0's last map by default.
    let image = data.join("light/0.png");
    let o = inception(
        dir.path(),
        &[
            "explain",
            "--checkpoint",
            "thawed/model.pt",
            "--out",
            "cam",
            image.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(said.contains("_conv_head"), "{said}");
    assert!(dir.path().join("cam/0.cam.png").exists());
    let o = inception(
        dir.path(),
        &[
            "explain",
            "--checkpoint",
            "thawed/model.pt",
            "--layer",
            "inception5b",
            "--out",
            "c2",
        ]
        .into_iter()
        .chain([image.to_str().unwrap()])
        .collect::<Vec<_>>(),
    );
    let err = assert_clean_failure(&o);
    assert!(err.contains("_blocks.15"), "{err}");
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("thawed/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["pretrained"], true);
    assert_eq!(config["freeze_epochs"], 1);
    assert_eq!(config["backbone_lr_mult"], 0.5);
}

// ---------- download and cache ----------

/// A one-thread HTTP server on 127.0.0.1 answering `GET /NAME` with `files[NAME]`, or as
/// `how` says; it counts the requests.
struct Server {
    url: String,
    requests: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
enum How {
    Whole,
    /// Sends half with no length (the end of the body is the closed connection).
    CutNoLength,
    /// Announces the whole length, sends half and closes.
    Cut,
    Error500,
    /// Announces a terabyte, sends a little and closes.
    Huge,
    /// Answers every request with a redirect to this location.
    Redirect(&'static str),
}

fn serve(files: Vec<(String, Vec<u8>)>, how: How) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let body = files
                .iter()
                .find(|(n, _)| n == path)
                .map(|(_, b)| b.clone());
            let _ = match (how, body) {
                (How::Error500, _) => stream.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                ),
                (How::Redirect(to), _) => stream.write_all(
                    format!(
                        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                (How::Huge, Some(b)) => stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1099511627776\r\nconnection: close\r\n\r\n")
                    .and_then(|_| stream.write_all(&b)),
                (_, None) => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                ),
                (How::CutNoLength, Some(b)) => stream
                    .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
                    .and_then(|_| stream.write_all(&b[..b.len() / 2])),
                (how, Some(b)) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        b.len()
                    );
                    let sent = match how {
                        How::Cut => &b[..b.len() / 2],
                        _ => &b[..],
                    };
                    stream
                        .write_all(head.as_bytes())
                        .and_then(|_| stream.write_all(sent))
                }
            };
        }
    });
    Server { url, requests }
}

/// The small state_dict under a name carrying its SHA-256 prefix (or a wrong one).
fn hashed_file(right: bool) -> (String, Vec<u8>) {
    let bytes = fs::read(fixture("small.zip.pth")).unwrap();
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let prefix = if right { hash } else { "deadbeef".into() };
    (format!("small-{prefix}.pth"), bytes)
}

fn files_in(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    }
}

#[test]
fn the_hash_prefix_is_found_as_torch_hubs_regex_finds_it() {
    let cases = [
        ("googlenet-1378be20.pth", Some("1378be20")),
        ("resnet-18-f37072fd.pth", Some("f37072fd")),
        ("model-v2-abc.tar.gz", Some("abc")),
        ("a-12.b-34.pth", Some("12")),
        ("efficientnet-lite0-57934424.pth", Some("57934424")),
        ("weights.pth", None),
        ("model-.pth", None),
        ("model-ABCD.pth", None),
        ("model-abcd", None),
    ];
    for (name, want) in cases {
        assert_eq!(hub::hash_prefix(name), want, "{name}");
    }
}

#[test]
fn a_download_is_bounded_in_size_and_redirects_and_leaves_nothing_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bytes) = hashed_file(true);
    let files = vec![(good.clone(), bytes)];
    let huge = serve(files.clone(), How::Huge);
    let err = hub::download(&format!("{}/{good}", huge.url), &dir.path().join(&good)).unwrap_err();
    assert!(
        format!("{err:#}").contains("announces 1099511627776 bytes, more than the 2147483648"),
        "{err:#}"
    );
    // A loop, and schemes other than http(s), which are not followed.
    for (how, want) in [
        (How::Redirect("/again.pth"), "too many redirects"),
        (How::Redirect("file:///etc/passwd"), "redirect"),
        (How::Redirect("ftp://127.0.0.1/x.pth"), "ftp"),
    ] {
        let s = serve(files.clone(), how);
        let err = hub::download(&format!("{}/{good}", s.url), &dir.path().join(&good)).unwrap_err();
        let err = format!("{err:#}").to_lowercase();
        assert!(err.contains(want), "{err}");
        assert!(s.requests.load(Ordering::SeqCst) <= 1 + hub::MAX_REDIRECTS as usize);
    }
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn a_download_is_kept_only_when_whole_and_its_hash_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bytes) = hashed_file(true);
    let (bad, _) = hashed_file(false);
    let files = vec![(good.clone(), bytes.clone()), (bad.clone(), bytes.clone())];
    let s = serve(files.clone(), How::Whole);
    let target = dir.path().join(&good);
    hub::download(&format!("{}/{good}", s.url), &target).unwrap();
    assert_eq!(fs::read(&target).unwrap(), bytes);
    assert_eq!(files_in(dir.path()), std::slice::from_ref(&good));

    let err = hub::download(&format!("{}/{bad}", s.url), &dir.path().join(&bad)).unwrap_err();
    assert!(
        format!("{err:#}").contains("does not start with deadbeef"),
        "{err:#}"
    );
    assert_eq!(files_in(dir.path()), std::slice::from_ref(&good));

    let cut = serve(files.clone(), How::Cut);
    let other = dir.path().join("sub");
    fs::create_dir(&other).unwrap();
    let err = hub::download(&format!("{}/{good}", cut.url), &other.join(&good)).unwrap_err();
    assert!(
        format!("{err:#}").contains("the connection broke after"),
        "{err:#}"
    );
    assert!(files_in(&other).is_empty());

    // No length and no hash in the name: the cut is seen when the file is read back.
    let plain = "small.pth".to_string();
    let silent = serve(vec![(plain.clone(), bytes.clone())], How::CutNoLength);
    let err = hub::download(&format!("{}/{plain}", silent.url), &other.join(&plain)).unwrap_err();
    assert!(
        format!("{err:#}").contains("not readable weights: nothing kept"),
        "{err:#}"
    );
    assert!(files_in(&other).is_empty());

    let failing = serve(files, How::Error500);
    let err = hub::download(&format!("{}/{good}", failing.url), &other.join(&good)).unwrap_err();
    assert!(format!("{err:#}").contains("HTTP 500"), "{err:#}");
    assert!(files_in(&other).is_empty());
}

/// The binary with torch.hub's cache in `home` and no proxy from the environment.
fn with_cache(home: &Path, args: &[&str]) -> Output {
    common::bin()
        .args(args)
        .current_dir(home)
        .env("TORCH_HOME", home.join("torch"))
        .env_remove("INCEPTION_OFFLINE")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap()
}

#[test]
fn a_url_is_downloaded_into_torch_hubs_cache_once_and_then_served_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (name, bytes) = hashed_file(true);
    let s = serve(vec![(name.clone(), bytes.clone())], How::Whole);
    let url = format!("{}/{name}", s.url);
    let cache = dir.path().join("torch/hub/checkpoints");
    // Offline, nothing is fetched: the error says where to put the file and where it is from.
    let o = with_cache(
        dir.path(),
        &[
            "import",
            "--arch",
            "seed",
            "--weights",
            &url,
            "--classes",
            "a,b",
            "--out",
            "o.pt",
            "--offline",
        ],
    );
    let err = assert_clean_failure(&o);
    assert!(
        err.contains(&cache.join(&name).display().to_string()),
        "{err}"
    );
    assert!(err.contains(&url), "{err}");
    assert_eq!(s.requests.load(Ordering::SeqCst), 0);
    // Online: downloaded (the small state_dict does not fit seed: refused after the download).
    for round in 1..=2 {
        let o = with_cache(
            dir.path(),
            &[
                "import",
                "--arch",
                "seed",
                "--weights",
                &url,
                "--classes",
                "a,b",
                "--out",
                "o.pt",
            ],
        );
        let err = assert_clean_failure(&o);
        assert!(err.contains("do not fit the seed network"), "{err}");
        assert_eq!(fs::read(cache.join(&name)).unwrap(), bytes);
        assert_eq!(files_in(&cache), std::slice::from_ref(&name));
        // The second call is served from the cache: no request.
        assert_eq!(s.requests.load(Ordering::SeqCst), 1, "round {round}");
    }
}

#[test]
fn the_cache_folder_follows_torch_home_then_xdg_cache_home_then_home() {
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = common::bin();
        cmd.env_remove("TORCH_HOME").env_remove("XDG_CACHE_HOME");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args([
            "train",
            "--arch",
            "efficientnet_lite0",
            "--pretrained",
            "--offline",
        ])
        .args(["--data", "/nonexistent-data"]);
        let o = cmd.output().unwrap();
        assert_clean_failure(&o)
    };
    let lite = "efficientnet-lite0-57934424.pth";
    let err = run(&[
        ("TORCH_HOME", "/t"),
        ("XDG_CACHE_HOME", "/x"),
        ("HOME", "/h"),
    ]);
    assert!(err.contains(&format!("/t/hub/checkpoints/{lite}")), "{err}");
    let err = run(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
    assert!(
        err.contains(&format!("/x/torch/hub/checkpoints/{lite}")),
        "{err}"
    );
    let err = run(&[("HOME", "/h")]);
    assert!(
        err.contains(&format!("/h/.cache/torch/hub/checkpoints/{lite}")),
        "{err}"
    );
}

#[test]
fn googlenet_pretrained_offline_names_where_to_put_the_file_and_refuses_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("torch/hub/checkpoints");
    let args = [
        "train",
        "--arch",
        "googlenet",
        "--pretrained",
        "--offline",
        "--data",
        "/nonexistent-data",
    ];
    let o = with_cache(dir.path(), &args);
    let err = assert_clean_failure(&o);
    let path = cache.join("googlenet-1378be20.pth");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("https://download.pytorch.org/models/googlenet-1378be20.pth"),
        "{err}"
    );
    // A file under that name whose SHA-256 does not start with 1378be20 is refused, kept.
    fs::create_dir_all(&cache).unwrap();
    fs::copy(fixture("googlenet.legacy.pth"), &path).unwrap();
    let o = with_cache(dir.path(), &args);
    let err = assert_clean_failure(&o);
    assert!(err.contains("does not start with 1378be20"), "{err}");
    assert!(path.exists());
}
