//! The networks against PyTorch: names, parameter and MAC counts, logits, input sizes.

use crate::common;

use common::{case, cases, io, relative_error, state_dict};
use inception::model::{Arch, Model, NetConfig};
use tch::{Device, Kind, Tensor};

fn arch(name: &str) -> Arch {
    match name {
        "seed" => Arch::Seed,
        _ => Arch::Googlenet,
    }
}

/// The network of a reference case, auxiliary heads included for googlenet (as built there).
fn model_for(c: &common::Case) -> Model {
    let a = arch(&c.arch);
    let config = NetConfig {
        aux_logits: a == Arch::Googlenet,
        transform_input: c.transform_input,
        ..NetConfig::new(a, c.classes)
    };
    Model::new(config, Device::Cpu).unwrap()
}

#[test]
fn var_store_paths_equal_pytorch_state_dict_keys() {
    for c in cases() {
        let model = model_for(&c);
        let ours: Vec<String> = model.state_dict().into_keys().collect();
        assert_eq!(
            ours, c.keys,
            "{}: var-store paths differ from the state_dict keys",
            c.name
        );
    }
}

#[test]
fn logits_match_pytorch_within_1e_4_in_eval_mode() {
    for c in cases() {
        let mut model = model_for(&c);
        model.load_state_dict(&state_dict(&c.name)).unwrap();
        let (x, expected) = io(&c.name);
        let got = tch::no_grad(|| model.forward_t(&x, false)).unwrap().logits;
        assert_eq!(got.size(), expected.size(), "{}", c.name);
        let err = relative_error(&got, &expected);
        assert!(err <= 1e-4, "{}: max|Δlogit|/max|logit| = {err:e}", c.name);
        // The logits depend on the input well beyond the tolerance, so parity means something.
        if x.size()[0] > 1 {
            let spread = relative_error(&expected.get(0), &expected.get(1));
            assert!(spread > 5e-3, "{}: degenerate fixture ({spread:e})", c.name);
        }
    }
}

#[test]
fn a_network_with_other_weights_does_not_match() {
    // The parity check above can fail: fresh weights give other logits.
    let c = case("seed_2");
    let model = model_for(&c);
    let (x, expected) = io(&c.name);
    let got = tch::no_grad(|| model.forward_t(&x, false)).unwrap().logits;
    assert!(relative_error(&got, &expected) > 1e-2);
}

#[test]
fn summary_params_equal_the_var_store_and_pytorch() {
    for c in cases() {
        let model = model_for(&c);
        let s = model.summary(c.image_size).unwrap();
        assert_eq!(s.total_params, model.num_params(), "{}", c.name);
        assert_eq!(s.total_params, c.params, "{}", c.name);
        assert_eq!(s.aux_params, c.aux_params, "{}", c.name);
        let rows: i64 = s.layers.iter().map(|r| r.params).sum();
        assert_eq!(rows, s.total_params, "{}: rows do not add up", c.name);
    }
}

#[test]
fn summary_macs_equal_an_independent_pytorch_count() {
    for c in cases() {
        let s = model_for(&c).summary(c.image_size).unwrap();
        assert_eq!(s.total_macs, c.macs, "{} at {}", c.name, c.image_size);
    }
}

#[test]
fn seed_with_two_classes_has_6_658_194_parameters() {
    let model = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu).unwrap();
    assert_eq!(model.num_params(), 6_658_194);
    assert_eq!(model.summary(224).unwrap().total_params, 6_658_194);
}

#[test]
fn reductions_save_parameters_and_macs_in_every_block() {
    let s = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu)
        .unwrap()
        .summary(224)
        .unwrap();
    assert_eq!(s.blocks.len(), 9);
    for b in &s.blocks {
        assert!(b.params < b.params_without_reductions, "{}", b.block);
        assert!(b.macs < b.macs_without_reductions, "{}", b.block);
    }
    // 3a by hand: without reductions branch 2 is a 3×3 conv 192→128 and branch 3 one 192→32,
    // with bias and BatchNorm; branches 1 and 4 as built.
    let b = &s.blocks[0];
    let conv = |cin: i64, cout: i64, k: i64| cout * cin * k * k + cout + 2 * cout;
    let without = conv(192, 64, 1) + conv(192, 128, 3) + conv(192, 32, 3) + conv(192, 32, 1);
    assert_eq!(b.params_without_reductions, without);
    assert_eq!(b.input, vec![192, 29, 29]);
}

#[test]
fn minimum_image_size_is_exact_for_both_networks() {
    // The sizes README states.
    assert_eq!(Arch::Seed.min_image_size(), 23);
    assert_eq!(Arch::Googlenet.min_image_size(), 15);
    for a in [Arch::Seed, Arch::Googlenet] {
        let model = Model::new(NetConfig::new(a, 3), Device::Cpu).unwrap();
        let min = a.min_image_size();
        assert!(model.summary(min).is_ok(), "{a} at {min}");
        let x = Tensor::zeros([1, 3, min, min], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| model.forward_t(&x, false)).unwrap();
        assert_eq!(out.logits.size(), vec![1, 3], "{a} at {min}");
        // Below the minimum the shape walk has no room for a window, and forward says so.
        let err = model.summary(min - 1).unwrap_err().to_string();
        assert!(err.contains("too small"), "{err}");
        let x = Tensor::zeros([1, 3, min - 1, min - 1], (Kind::Float, Device::Cpu));
        let err = tch::no_grad(|| model.forward_t(&x, false))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("smallest it accepts is {min}")),
            "{err}"
        );
    }
}

#[test]
fn efficientnet_lite0_takes_any_size_with_same_padding_and_keeps_its_rows_summed() {
    let model = Model::new(NetConfig::new(Arch::EfficientnetLite0, 3), Device::Cpu).unwrap();
    assert_eq!(Arch::EfficientnetLite0.min_image_size(), 1);
    for side in [1, 31, 33, 64, 225] {
        let x = Tensor::rand([2, 3, side, side], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| model.forward_t(&x, false)).unwrap();
        assert_eq!(out.logits.size(), vec![2, 3], "at {side}");
        let s = model.summary(side).unwrap();
        let rows: i64 = s.layers.iter().map(|r| r.params).sum();
        assert_eq!(rows, model.num_params(), "at {side}");
        // SAME padding: the last map is ⌈side/32⌉ on each axis.
        let head = s.layers.iter().find(|r| r.name == "_conv_head").unwrap();
        let last = (side + 31) / 32;
        assert_eq!(head.output, vec![1280, last, last], "at {side}");
    }
    // The published 4,652,008 (1000 classes) less 997 of its 1,281-weight class rows.
    assert_eq!(model.num_params(), 4_652_008 - 1000 * 1281 + 3 * 1281);
}

#[test]
fn shape_walk_below_the_minimum_fails_in_the_layer_walk_itself() {
    // The stated minimum is not just a constant: one below it, a layer has no room.
    use inception::model::summary::Walker;
    for a in [Arch::Seed, Arch::Googlenet] {
        let min = a.min_image_size();
        let model = Model::new(NetConfig::new(a, 2), Device::Cpu).unwrap();
        // Walk the layers directly (summary() checks the constant first).
        let walks = |s: i64| {
            let mut w = Walker::new([3, s, s]);
            model.describe(&mut w).is_ok()
        };
        assert!(walks(min), "{a}: walk fails at {min}");
        assert!(!walks(min - 1), "{a}: walk passes at {}", min - 1);
    }
}

#[test]
fn googlenet_aux_heads_run_in_training_only() {
    let config = NetConfig {
        aux_logits: true,
        ..NetConfig::new(Arch::Googlenet, 4)
    };
    let model = Model::new(config, Device::Cpu).unwrap();
    let x = Tensor::randn([2, 3, 96, 96], (Kind::Float, Device::Cpu));
    let train = model.forward_t(&x, true).unwrap();
    assert_eq!(train.aux_logits.len(), 2);
    for a in &train.aux_logits {
        assert_eq!(a.size(), vec![2, 4]);
    }
    let eval = tch::no_grad(|| model.forward_t(&x, false)).unwrap();
    assert!(eval.aux_logits.is_empty());
    assert_eq!(eval.logits.size(), vec![2, 4]);
}

#[test]
fn load_state_dict_lists_missing_unexpected_and_misshaped_tensors() {
    let mut model = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu).unwrap();
    let mut sd = state_dict("seed_10");
    sd.remove("conv1.weight");
    sd.remove("inception3a.branch1.1.num_batches_tracked"); // optional, as in PyTorch
    sd.insert(
        "extra.weight".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    );
    let err = model.load_state_dict(&sd).unwrap_err().to_string();
    assert!(err.contains("1 missing: conv1.weight"), "{err}");
    assert!(err.contains("1 unexpected: extra.weight"), "{err}");
    assert!(
        err.contains("classifier.2.weight (expected [2, 1024], got [10, 1024])"),
        "{err}"
    );
    assert!(!err.contains("num_batches_tracked"), "{err}");
}

#[test]
fn init_from_copies_matching_tensors_and_keeps_the_class_layer_fresh() {
    let c = case("googlenet_2");
    let mut source = model_for(&c);
    source.load_state_dict(&state_dict(&c.name)).unwrap();
    let config = NetConfig {
        aux_logits: true,
        ..NetConfig::new(Arch::Googlenet, 3)
    };
    let mut target = Model::new(config, Device::Cpu).unwrap();
    let report = target.init_from(&source).unwrap();
    let fresh = [
        "aux1.fc2.bias",
        "aux1.fc2.weight",
        "aux2.fc2.bias",
        "aux2.fc2.weight",
        "fc.bias",
        "fc.weight",
    ];
    assert_eq!(report.kept, fresh);
    assert_eq!(report.copied.len(), c.keys.len() - fresh.len());
    let (s, t) = (source.state_dict(), target.state_dict());
    assert!(t["inception4c.branch2.1.conv.weight"].equal(&s["inception4c.branch2.1.conv.weight"]));
    assert!(t["conv1.bn.running_var"].equal(&s["conv1.bn.running_var"]));
    assert_eq!(t["fc.weight"].size(), vec![3, 1024]);
}

#[test]
fn folding_batchnorm_keeps_the_eval_logits_and_leaves_training_alone() {
    for c in cases() {
        let mut model = model_for(&c);
        model.load_state_dict(&state_dict(&c.name)).unwrap();
        let (x, expected) = io(&c.name);
        let before = model.state_dict();
        model.fold_batchnorm().unwrap();
        let got = tch::no_grad(|| model.forward_t(&x, false)).unwrap().logits;
        let err = relative_error(&got, &expected);
        assert!(err <= 1e-4, "{}: folded logits differ by {err:e}", c.name);
        for (k, t) in model.state_dict() {
            assert!(t.equal(&before[&k]), "{}: {k} changed", c.name);
        }
    }
}

#[test]
fn channels_last_and_bf16_and_fp16_autocast_keep_the_logits_close() {
    use inception::model::layers::is_channels_last;
    use inception::precision::{Compute, Precision};
    let c = case("seed_2");
    let (x, expected) = io(&c.name);
    for (precision, tolerance) in [
        (Precision::Fp32, 1e-4),
        (Precision::Bf16, 5e-2),
        (Precision::Fp16, 1e-2),
    ] {
        let mut model = model_for(&c);
        model.load_state_dict(&state_dict(&c.name)).unwrap();
        let compute = Compute::new(Device::Cpu, precision, true).unwrap();
        compute.prepare(&mut model).unwrap();
        let sd = model.state_dict();
        assert!(is_channels_last(&sd["inception3a.branch2.3.weight"]));
        assert!(sd["inception3a.branch2.3.weight"]
            .equal(&state_dict(&c.name)["inception3a.branch2.3.weight"]));
        let input = compute.input(&x).unwrap();
        assert!(is_channels_last(&input));
        let logits = tch::no_grad(|| {
            let _autocast = compute.autocast();
            model.forward_t(&input, false).unwrap().logits
        });
        let want = match precision {
            Precision::Bf16 => Kind::BFloat16,
            Precision::Fp16 => Kind::Half,
            _ => Kind::Float,
        };
        assert_eq!(logits.kind(), want, "autocast was not engaged as asked");
        let err = relative_error(&logits.to_kind(Kind::Float), &expected);
        assert!(err <= tolerance, "{precision}: {err:e}");
    }
    // Outside the guard, autocast is off again.
    let model = model_for(&c);
    let logits = tch::no_grad(|| model.forward_t(&x, false).unwrap().logits);
    assert_eq!(logits.kind(), Kind::Float);
}

#[test]
fn auto_precision_follows_the_cpu_and_the_cuda_compute_capability() {
    use inception::precision::{Precision, Why};
    use inception::system::cpu_has_bf16;
    let auto = Precision::Auto.resolve(Device::Cpu).unwrap();
    assert_eq!(
        auto,
        if cpu_has_bf16() {
            Precision::Bf16
        } else {
            Precision::Fp32
        }
    );
    let choose = |seen| Precision::Auto.choose_for(seen).unwrap().0;
    let cuda = |major, minor| Why::Cuda {
        capability: Some((major, minor)),
    };
    // A100/H100/H200 and RTX 30xx/40xx: bf16; V100, T4, RTX 20xx: fp16 (with loss scaling);
    // Pascal and older, or a device the driver says nothing of: fp32.
    for (seen, want) in [
        (cuda(9, 0), Precision::Bf16),
        (cuda(8, 6), Precision::Bf16),
        (cuda(8, 0), Precision::Bf16),
        (cuda(7, 5), Precision::Fp16),
        (cuda(7, 0), Precision::Fp16),
        (cuda(6, 1), Precision::Fp32),
        (Why::Cuda { capability: None }, Precision::Fp32),
        (Why::Cpu { bf16: true }, Precision::Bf16),
        (Why::Cpu { bf16: false }, Precision::Fp32),
    ] {
        assert_eq!(choose(seen), want, "{seen:?}");
    }
    assert_eq!(
        cuda(7, 5).to_string(),
        "auto: compute capability 7.5 < 8.0, no fast bf16; fp16 tensor cores, with loss scaling"
    );
    // An explicit choice is kept, fp16 on the CPU included (libtorch's CPU autocast has it).
    for p in [Precision::Fp32, Precision::Bf16, Precision::Fp16] {
        assert_eq!(p.choose(Device::Cpu).unwrap(), (p, Why::Asked));
    }
}
