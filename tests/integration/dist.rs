//! The c10d process group (src/dist.rs): collectives between ranks on loopback (here two
//! threads of one process, each its own rank), gradient averaging in buckets, and a rank whose
//! partner never comes failing with a clear error instead of hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use inception::dist::{Backend, Group, World, BUCKET_BYTES};
use tch::{Device, Kind, Tensor};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn world(rank: usize, size: usize, port: u16) -> World {
    World {
        rank,
        size,
        addr: "127.0.0.1".into(),
        port,
        local_size: 1,
    }
}

/// Runs `f(group)` on `size` ranks at once, one thread each; their results by rank.
fn on_ranks<T: Send>(size: usize, f: impl Fn(Arc<Group>) -> T + Sync) -> Vec<T> {
    let port = free_port();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..size)
            .map(|rank| {
                let f = &f;
                s.spawn(move || {
                    let g = Group::join(
                        &world(rank, size, port),
                        Backend::Gloo,
                        Duration::from_secs(60),
                        "same\n",
                    )
                    .unwrap();
                    f(Arc::new(g))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn all_reduce_sums_and_broadcast_copies_across_ranks() {
    let out = on_ranks(2, |g| {
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (g.rank as f64 + 1.0);
        g.all_reduce_sum(std::slice::from_ref(&t)).unwrap();
        let b = Tensor::from_slice(&[g.rank as f32 * 10.0 + 5.0]);
        g.broadcast(std::slice::from_ref(&b), 1).unwrap();
        (Vec::<f32>::try_from(&t).unwrap(), b.double_value(&[0]))
    });
    for (sum, b) in out {
        assert_eq!(sum, [3.0, 6.0, 9.0]);
        assert_eq!(b, 15.0);
    }
}

#[test]
fn gradients_are_averaged_over_ranks_across_several_buckets() {
    // A parameter larger than a bucket between two small ones: three all-reduces.
    let big = (BUCKET_BYTES / 4 + 1000) as i64;
    let out = on_ranks(2, |g| {
        let r = g.rank as f64;
        let params: Vec<Tensor> = [3i64, big, 5]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let p = Tensor::zeros([n], (Kind::Float, Device::Cpu)).set_requires_grad(true);
                // Gradient: (rank + 1) · (i + 1) everywhere.
                (&p * ((r + 1.0) * (i as f64 + 1.0)))
                    .sum(Kind::Float)
                    .backward();
                p
            })
            .collect();
        g.average_gradients(&params).unwrap();
        params
            .iter()
            .map(|p| {
                let gr = p.grad();
                (gr.min().double_value(&[]), gr.max().double_value(&[]))
            })
            .collect::<Vec<_>>()
    });
    for ranks in out {
        // Mean of (1, 2) · (i + 1) = 1.5 · (i + 1).
        assert_eq!(ranks, [(1.5, 1.5), (3.0, 3.0), (4.5, 4.5)]);
    }
}

#[test]
fn a_rank_whose_partner_never_comes_fails_with_a_clear_error() {
    let started = Instant::now();
    let err = Group::join(
        &world(0, 2, free_port()),
        Backend::Gloo,
        Duration::from_secs(2),
        "",
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(started.elapsed() < Duration::from_secs(30), "it hung");
    assert!(
        err.starts_with("rank 0 of 2: joining the Gloo process group at 127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains('\n'), "a multi-line error: {err}");
}

#[test]
fn ranks_started_differently_all_refuse_at_once_naming_the_difference() {
    // Three ranks; the odd one out comes late, so that rank 0 (which serves the store) has
    // long seen the difference when it reads: it must stay until every rank has read.
    let port = free_port();
    let started = Instant::now();
    let says = |rank: usize| match rank {
        2 => "lr=0.001\nbatch_size=16\n",
        _ => "lr=0.001\nbatch_size=32\n",
    };
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                s.spawn(move || {
                    if rank == 2 {
                        std::thread::sleep(Duration::from_millis(1500));
                    }
                    let err = Group::join(
                        &world(rank, 3, port),
                        Backend::Gloo,
                        Duration::from_secs(60),
                        says(rank),
                    )
                    .unwrap_err();
                    format!("{err:#}")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it waited for the timeout"
    );
    for (rank, err) in errors.iter().enumerate() {
        assert!(
            err.starts_with(&format!("rank {rank} of 3: joining the Gloo process group")),
            "{err}"
        );
        let expected = match rank {
            2 => "rank 0 has batch_size=32 where rank 2 has batch_size=16",
            r => &format!("rank {r} has batch_size=32 where rank 2 has batch_size=16"),
        };
        assert!(
            err.contains(&format!("the processes were not started alike: {expected}")),
            "{err}"
        );
        assert!(!err.contains('\n'), "a multi-line error: {err}");
    }
}

/// A CUDA build of libtorch gets NCCL (scripts/deps.sh brings the headers, build.rs finds them),
/// and its process group is really linked in: without a GPU its constructor refuses, in one
/// line, instead of the shim's "no NCCL in this build". With two GPUs or more,
/// scripts/gpu-check.sh trains over NCCL instead (tests/integration/cuda.rs).
#[test]
fn a_cuda_build_has_nccl_which_refuses_a_machine_without_gpus_in_one_line() {
    let system = inception::system::System::probe();
    if system.libtorch.cuda_runtime.is_none() {
        eprintln!("skipped: a CPU-only libtorch has no NCCL");
        return;
    }
    assert!(
        inception::dist::nccl_available(),
        "a CUDA libtorch, but the build has no NCCL (CUDA headers missing from .deps/cuda?)"
    );
    if tch::Cuda::device_count() > 0 {
        eprintln!(
            "skipped: there is a GPU here (tests/integration/cuda.rs trains over NCCL, given two)"
        );
        return;
    }
    let err = Group::join(
        &world(0, 1, free_port()),
        Backend::Nccl { device: 0 },
        Duration::from_secs(10),
        "",
    )
    .unwrap_err();
    let err = format!("{err:#}");
    eprintln!("NCCL without a GPU: {err}");
    assert!(
        err.starts_with("rank 0 of 1: joining the NCCL process group at 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("GPU"), "{err}");
    assert!(!err.contains("no NCCL"), "{err}");
    assert!(!err.contains('\n'), "a multi-line error: {err}");
}

#[test]
fn nccl_is_passed_over_where_processes_would_share_a_gpu_and_refused_there_when_forced() {
    // Reads INCEPTION_DIST_BACKEND, which no other test of this binary sets or reads.
    let gpus = tch::Cuda::device_count() as usize;
    let crowd = gpus + 1;
    let shared = format!(
        "{crowd} processes on this machine share {gpus} GPU(s), and NCCL needs one GPU per process"
    );
    let expected = match inception::dist::nccl_available() {
        true => shared.as_str(),
        false => "this build has no NCCL",
    };
    let (backend, why) = Backend::choose(Device::Cuda(0), crowd).unwrap();
    assert_eq!(backend, Backend::Gloo);
    let why = why.unwrap();
    assert!(why.contains(expected), "{why}");
    assert_eq!(
        Backend::choose(Device::Cpu, 2).unwrap(),
        (Backend::Gloo, None)
    );
    if gpus > 0 && inception::dist::nccl_available() {
        assert_eq!(
            Backend::choose(Device::Cuda(0), 1).unwrap(),
            (Backend::Nccl { device: 0 }, None)
        );
    }
    let forced = Backend::choose_with(Device::Cuda(0), crowd, Some("nccl".into()))
        .map_err(|e| format!("{e:#}"));
    let gloo = Backend::choose_with(Device::Cuda(0), 1, Some("gloo".into())).unwrap();
    let forced = forced.unwrap_err();
    assert!(
        forced.starts_with("INCEPTION_DIST_BACKEND=nccl: "),
        "{forced}"
    );
    assert!(forced.contains(expected), "{forced}");
    assert_eq!(
        gloo,
        (Backend::Gloo, Some("INCEPTION_DIST_BACKEND=gloo".into()))
    );
}

#[test]
fn the_world_comes_from_torchruns_variables() {
    // torchrun's variables, looked up in a table rather than set in this process (whose
    // environment every command a test starts inherits).
    let vars = |pairs: &[(&str, &str)]| {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    };
    let base = [
        ("WORLD_SIZE", "4"),
        ("RANK", "2"),
        ("MASTER_ADDR", "10.0.0.7"),
        ("MASTER_PORT", "29400"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        for (k, v) in extra {
            all.retain(|(n, _)| n != k);
            all.push((k, v));
        }
        vars(&all)
    };
    let w = World::from_vars(with(&[])).unwrap();
    let two_here = World::from_vars(with(&[("LOCAL_WORLD_SIZE", "2")]))
        .unwrap()
        .unwrap()
        .local_size;
    let too_many = World::from_vars(with(&[("LOCAL_WORLD_SIZE", "5")]))
        .unwrap_err()
        .to_string();
    let err = World::from_vars(with(&[("RANK", "4")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        w,
        Some(world(2, 4, 29400)).map(|w| World {
            addr: "10.0.0.7".into(),
            ..w
        })
    );
    assert_eq!(two_here, 2);
    assert!(
        too_many.contains("LOCAL_WORLD_SIZE=\"5\" is not a number from 1 to WORLD_SIZE=4"),
        "{too_many}"
    );
    assert!(err.contains("RANK=4 is not below WORLD_SIZE=4"), "{err}");
    assert_eq!(World::from_env().unwrap(), None);
}

/// A seed-network training state (SGD with momentum and weight decay: an update that saw
/// summed instead of averaged gradients would differ) with the weights saved in `init`.
fn seed_state(init: &std::path::Path, group: Option<Arc<Group>>) -> inception::train::State {
    use inception::model::{Arch, Model, NetConfig};
    let mut model = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu).unwrap();
    model.vs.load(init).unwrap();
    let optimizer = inception::train::optim::Optimizer::new(
        &model,
        inception::config::OptimizerKind::Sgd,
        0.9,
        0.05,
    )
    .unwrap();
    inception::train::State {
        model,
        optimizer,
        ema: None,
        scaler: None,
        group,
        progress: inception::checkpoint::record::ResumeState::default(),
        epochs_done: 0,
        probe: None,
    }
}

fn params(state: &inception::train::State) -> Vec<(String, Tensor)> {
    let mut p: Vec<_> = state
        .model
        .state_dict()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(k, t)| (k, t.detach().copy()))
        .collect();
    p.sort_by(|a, b| a.0.cmp(&b.0));
    p
}

#[test]
fn two_processes_of_batch_b_step_like_one_process_of_batch_2b() {
    // The network normalises with BatchNorm's running statistics here (forward_t(x, false):
    // no batch statistics, no dropout). In training mode each process's BatchNorm would use
    // the statistics of its own B images, not of all 2B — by design, as DDP without
    // SyncBatchNorm — and the two runs would differ by that, not by the averaging tested here.
    use inception::model::{Arch, Model, NetConfig};
    use inception::train::epoch::backward_and_step;
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.safetensors");
    tch::manual_seed(11);
    Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu)
        .unwrap()
        .vs
        .save(&init)
        .unwrap();
    tch::manual_seed(5);
    let x: Vec<f32> =
        Vec::try_from(Tensor::randn([8 * 3 * 32 * 32], (Kind::Float, Device::Cpu))).unwrap();
    let y = [0i64, 1, 1, 0, 1, 0, 0, 1];
    // The images [from, from + n) and their labels.
    let batch = |from: usize, n: usize| {
        let px = 3 * 32 * 32;
        (
            Tensor::from_slice(&x[from * px..(from + n) * px]).view([n as i64, 3, 32, 32]),
            Tensor::from_slice(&y[from..from + n]),
        )
    };
    let step = |state: &mut inception::train::State, (x, y): (Tensor, Tensor)| {
        let logits = state.model.forward_t(&x, false).unwrap().logits;
        let loss = logits.cross_entropy_for_logits(&y);
        assert!(backward_and_step(state, &loss, 0.05).unwrap());
    };
    let mut one = seed_state(&init, None);
    for _ in 0..3 {
        step(&mut one, batch(0, 8));
    }
    let want = params(&one);
    let got = on_ranks(2, |g| {
        let r = g.rank;
        let mut state = seed_state(&init, Some(g));
        for _ in 0..3 {
            step(&mut state, batch(4 * r, 4));
        }
        params(&state)
    });
    for ((name, a), (_, b)) in got[0].iter().zip(&got[1]) {
        assert!(a.equal(b), "{name}: the two processes differ");
    }
    for ((name, a), (_, b)) in want.iter().zip(&got[0]) {
        let diff = (a - b).abs().max().double_value(&[]);
        let size = a.abs().max().double_value(&[]).max(1e-6);
        assert!(diff <= 1e-5 * size, "{name}: {diff:e} apart (of {size:e})");
    }
}
