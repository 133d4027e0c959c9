//! Weights by URL, cached the way `torch.hub.load_state_dict_from_url` caches them: in
//! `$TORCH_HOME/hub/checkpoints`, else `$XDG_CACHE_HOME/torch/hub/checkpoints`, else
//! `~/.cache/torch/hub/checkpoints`, under the URL's file name — so a file a PyTorch user
//! already has is used with no download. A name ending `-<hex>.<ext>` carries the first hex
//! digits of the file's SHA-256 (torchvision's convention), checked on every use. A download
//! goes to a `.partial` file beside its target, is hashed as it arrives and renamed only when
//! whole and checked; anything else leaves no file behind. A download is bounded: connect,
//! response and body timeouts, at most [`MAX_REDIRECTS`] redirects (http and https only), at
//! most [`MAX_DOWNLOAD`] bytes, and exactly the Content-Length when the server gives one. The standard proxy variables
//! (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, …) are honoured.

use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The folder the cache uses, from the environment as torch.hub reads it.
pub fn cache_dir() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let torch_home = match (var("TORCH_HOME"), var("XDG_CACHE_HOME"), var("HOME")) {
        (Some(t), _, _) => t,
        (None, Some(x), _) => x.join("torch"),
        (None, None, Some(h)) => h.join(".cache").join("torch"),
        (None, None, None) => {
            bail!("no weights cache: none of TORCH_HOME, XDG_CACHE_HOME and HOME is set")
        }
    };
    Ok(torch_home.join("hub").join("checkpoints"))
}

/// Whether `s` names a file by URL rather than by path.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name a URL is cached under: its last path segment, without query or fragment.
pub fn file_name(url: &str) -> Result<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or("");
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('\\')
        && url
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
    if !ok {
        bail!("{url}: the URL names no file (its path must end in a file name)");
    }
    Ok(name.to_string())
}

/// The hex SHA-256 prefix a file name carries (`googlenet-1378be20.pth` → `1378be20`): the
/// first match of torch.hub's `HASH_REGEX`, `-([a-f0-9]*)\.`, anywhere in the name (an empty
/// match checks nothing, as there).
pub fn hash_prefix(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    for (i, _) in name.match_indices('-') {
        let start = i + 1;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                .count();
        if bytes.get(end) == Some(&b'.') {
            return (end > start).then(|| &name[start..end]);
        }
    }
    None
}

/// The SHA-256 of a file's bytes, in hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// Errors unless the file's SHA-256 starts with the prefix its name carries.
pub fn check_hash(path: &Path) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(want) = hash_prefix(name) else {
        return Ok(());
    };
    let got = sha256_file(path)?;
    if !got.starts_with(want) {
        bail!(
            "{}: SHA-256 {got} does not start with {want}, as its name says: the file is \
             damaged or not the one published under that name (remove it to download it again)",
            path.display()
        );
    }
    Ok(())
}

/// The longest a download's body may take (a 52 MB file at 60 kB/s), so that a stalled
/// server ends in an error rather than a hang.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The largest file downloaded, announced or not: far above any weights the tool reads.
pub const MAX_DOWNLOAD: u64 = 2 << 30;

/// The most redirects followed (each to http or https only: the client follows no other
/// scheme).
pub const MAX_REDIRECTS: u32 = 5;

static OFFLINE: AtomicBool = AtomicBool::new(false);

/// Forbids downloads for the rest of the process (`--offline`).
pub fn set_offline() {
    OFFLINE.store(true, Ordering::Relaxed);
}

/// Whether downloads are forbidden: `--offline`, or `INCEPTION_OFFLINE` set (not to 0).
pub fn offline() -> bool {
    OFFLINE.load(Ordering::Relaxed)
        || std::env::var("INCEPTION_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The cached file for `url`, downloaded first when the cache lacks it (unless
/// [`offline`]).
pub fn cached(url: &str) -> Result<PathBuf> {
    let name = file_name(url)?;
    let dir = cache_dir()?;
    let target = dir.join(&name);
    if target.is_file() {
        check_hash(&target)?;
        return Ok(target);
    }
    if offline() {
        bail!(
            "{} is not in the weights cache, and offline nothing is downloaded: put the file \
             at {} (from {url})",
            name,
            target.display()
        );
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    download(url, &target).with_context(|| {
        format!(
            "downloading {url} (without a network: put the file at {})",
            target.display()
        )
    })?;
    Ok(target)
}

/// Downloads `url` to `target` through a `.partial` file beside it; no file is left behind
/// unless the whole file arrived, its hash (when its name carries one) is right and it reads
/// as weights.
pub fn download(url: &str, target: &Path) -> Result<()> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .context("the target has no file name")?;
    let partial = target.with_file_name(format!("{name}.{}.partial", std::process::id()));
    // Read back before it is kept: without a length or a hash, a cut is seen only here.
    let result = fetch_to(url, &partial, hash_prefix(name)).and_then(|()| {
        super::read(&partial, tch::Device::Cpu)
            .map(drop)
            .context("the downloaded file is not readable weights: nothing kept")
    });
    match result {
        Ok(()) => {
            let renamed = fs::rename(&partial, target);
            if renamed.is_err() {
                let _ = fs::remove_file(&partial);
            }
            renamed
                .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn fetch_to(url: &str, partial: &Path, want: Option<&str>) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .timeout_recv_response(Some(std::time::Duration::from_secs(60)))
        .timeout_recv_body(Some(BODY_TIMEOUT))
        .max_redirects(MAX_REDIRECTS)
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => anyhow::anyhow!("the server answered HTTP {code}"),
        other => anyhow::anyhow!("{other}"),
    })?;
    let expected: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(n) = expected.filter(|&n| n > MAX_DOWNLOAD) {
        bail!(
            "the server announces {n} bytes, more than the {MAX_DOWNLOAD} a weights file is \
             downloaded up to: refused"
        );
    }
    let mut body = response.into_body().into_reader();
    let mut file =
        fs::File::create(partial).with_context(|| format!("creating {}", partial.display()))?;
    let bar = progress(expected);
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body
            .read(&mut buf)
            .with_context(|| format!("the connection broke after {got} bytes"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", partial.display()))?;
        got += n as u64;
        if got > expected.unwrap_or(MAX_DOWNLOAD) {
            bail!(
                "more than the {} bytes {} arrived: refused",
                expected.unwrap_or(MAX_DOWNLOAD),
                match expected {
                    Some(_) => "the server announced",
                    None => "a weights file is downloaded up to",
                }
            );
        }
        if let Some(b) = &bar {
            b.set_position(got);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(n) = expected {
        if got != n {
            bail!("the connection broke after {got} of {n} bytes");
        }
    }
    file.sync_all()
        .with_context(|| format!("writing {}", partial.display()))?;
    let hash = hex(&hasher.finalize());
    if let Some(want) = want {
        if !hash.starts_with(want) {
            bail!(
                "the downloaded file's SHA-256 {hash} does not start with {want}, as its name \
                 says: refused, nothing kept"
            );
        }
    }
    Ok(())
}

fn progress(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len.unwrap_or(0));
    let style = indicatif::ProgressStyle::with_template(
        "download [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
