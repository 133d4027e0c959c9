//! fp16 training's dynamic loss scaling (src/train/scaler.rs) against the semantics of PyTorch's
//! `torch.amp.GradScaler`, on hand-made gradients, and through the training step.

use inception::checkpoint::record::ResumeState;
use inception::config::OptimizerKind;
use inception::model::{Arch, Model, NetConfig};
use inception::train::epoch::backward_and_step;
use inception::train::optim::Optimizer;
use inception::train::scaler::{GradScaler, ScalerState, StepOutcome, INIT_SCALE};
use inception::train::State;
use tch::{Device, Kind, Tensor};

/// A parameter whose gradient is `grad`.
fn param_with_grad(grad: &[f32]) -> Tensor {
    let p = Tensor::zeros([grad.len() as i64], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let g = Tensor::from_slice(grad);
    (&p * &g).sum(Kind::Float).backward();
    p
}

fn grad(p: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&p.grad()).unwrap()
}

#[test]
fn unscaling_divides_every_gradient_by_the_scale_exactly() {
    let scaler = GradScaler::default();
    assert_eq!(scaler.scale(), 65536.0);
    let a = param_with_grad(&[65536.0, -3.0 * 65536.0, 1.5]);
    let b = param_with_grad(&[0.0, 1e30]);
    let found_inf = scaler
        .unscale(&[a.shallow_clone(), b.shallow_clone()])
        .unwrap();
    assert!(!found_inf);
    assert_eq!(grad(&a), [1.0, -3.0, 1.5 / 65536.0]);
    assert_eq!(grad(&b), [0.0, 1e30 / 65536.0]);
}

#[test]
fn a_step_with_an_inf_or_nan_gradient_is_skipped_and_the_scale_backs_off() {
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let mut scaler = GradScaler::new(ScalerState {
            scale: 1024.0,
            growth_tracker: 7,
        });
        let good = param_with_grad(&[1.0, 2.0]);
        let broken = param_with_grad(&[3.0, bad]);
        let mut called = false;
        let outcome = scaler
            .step(&[good, broken], || {
                called = true;
                Ok(())
            })
            .unwrap();
        assert_eq!(outcome, StepOutcome::Skipped, "{bad}");
        assert!(!called, "the optimiser stepped on a {bad} gradient");
        assert_eq!(
            scaler.state,
            ScalerState {
                scale: 512.0,
                growth_tracker: 0
            }
        );
    }
}

#[test]
fn the_scale_doubles_after_2000_clean_steps_in_a_row_and_never_overflows_fp32() {
    let mut scaler = GradScaler::default();
    for i in 1..2000 {
        scaler.update(false);
        assert_eq!(scaler.state.growth_tracker, i);
        assert_eq!(scaler.scale(), INIT_SCALE);
    }
    scaler.update(false);
    assert_eq!(
        scaler.state,
        ScalerState {
            scale: 2.0 * INIT_SCALE,
            growth_tracker: 0
        }
    );
    // A skip restarts the count.
    for _ in 0..1500 {
        scaler.update(false);
    }
    scaler.update(true);
    assert_eq!(scaler.scale(), INIT_SCALE);
    for _ in 0..1999 {
        scaler.update(false);
    }
    assert_eq!(scaler.scale(), INIT_SCALE);
    // At 2^127 a doubling would be inf in fp32: PyTorch keeps the scale, and so does this.
    let top = 2f64.powi(127);
    let mut scaler = GradScaler::new(ScalerState {
        scale: top,
        growth_tracker: 1999,
    });
    scaler.update(false);
    assert_eq!(
        scaler.state,
        ScalerState {
            scale: top,
            growth_tracker: 0
        }
    );
}

#[test]
fn fp16_gradients_that_underflow_to_zero_survive_scaling() {
    // loss = 2^-10 · Σ fp32(fp16(w) · 2^-20): each gradient is 2^-30, below fp16's smallest
    // subnormal (2^-24), so the fp16 backward pass flushes it to zero; scaled by 2^16 it is
    // 2^-14 in fp16, and unscaled in fp32 it is 2^-30 again.
    let run = |scaler: Option<&GradScaler>| -> Vec<f32> {
        let w = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let c = Tensor::full([3], 2f64.powi(-20), (Kind::Half, Device::Cpu));
        let loss = (w.to_kind(Kind::Half) * c)
            .to_kind(Kind::Float)
            .sum(Kind::Float)
            * 2f64.powi(-10);
        match scaler {
            Some(s) => {
                s.scale_loss(&loss).unwrap().backward();
                assert!(!s.unscale(&[w.shallow_clone()]).unwrap());
            }
            None => loss.backward(),
        }
        grad(&w)
    };
    assert_eq!(run(None), [0.0; 3], "premise: unscaled, fp16 flushes them");
    assert_eq!(run(Some(&GradScaler::default())), [2f32.powi(-30); 3]);
}

/// A training state of the seed network with SGD (momentum and weight decay: an update that
/// would see scaled gradients differs by the scale) and, optionally, a scaler.
fn state(scaler: Option<GradScaler>) -> State {
    tch::manual_seed(3);
    let model = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu).unwrap();
    let optimizer = Optimizer::new(&model, OptimizerKind::Sgd, 0.9, 0.05).unwrap();
    State {
        model,
        optimizer,
        ema: None,
        scaler,
        group: None,
        progress: ResumeState::default(),
        epochs_done: 0,
        probe: None,
    }
}

fn loss_of(state: &State, poison: f64) -> Tensor {
    tch::manual_seed(5);
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 0, 1]);
    let out = state.model.forward_t(&x, true).unwrap();
    out.logits.cross_entropy_for_logits(&y) * poison
}

/// The trainable parameters (BatchNorm's running statistics move in every training-mode
/// forward pass, step or no step, as in PyTorch).
fn weights(state: &State) -> Vec<(String, Tensor)> {
    let mut w: Vec<_> = state
        .model
        .state_dict()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w.into_iter().map(|(k, t)| (k, t.detach().copy())).collect()
}

#[test]
fn the_scaled_step_updates_the_weights_as_the_plain_step_and_a_nan_loss_changes_nothing() {
    let mut plain = state(None);
    let mut scaled = state(Some(GradScaler::default()));
    for _ in 0..3 {
        let loss = loss_of(&plain, 1.0);
        assert!(backward_and_step(&mut plain, &loss, 0.1).unwrap());
        let loss = loss_of(&scaled, 1.0);
        assert!(backward_and_step(&mut scaled, &loss, 0.1).unwrap());
    }
    for ((name, a), (_, b)) in weights(&plain).iter().zip(weights(&scaled)) {
        let diff = (a - &b).abs().max().double_value(&[]);
        let size = a.abs().max().double_value(&[]).max(1e-6);
        assert!(diff <= 1e-5 * size, "{name}: differs by {diff} (of {size})");
    }
    assert_eq!(scaled.scaler.as_ref().unwrap().state.growth_tracker, 3);

    // A NaN loss: the step is skipped; no weight moves, nor the optimiser's momentum.
    let before = weights(&scaled);
    let momentum: Vec<_> = scaled
        .optimizer
        .state()
        .into_values()
        .map(|t| t.copy())
        .collect();
    let loss = loss_of(&scaled, f64::NAN);
    assert!(!backward_and_step(&mut scaled, &loss, 0.1).unwrap());
    assert_eq!(scaled.optimizer.step, 3);
    assert_eq!(
        scaled.scaler.as_ref().unwrap().state,
        ScalerState {
            scale: INIT_SCALE / 2.0,
            growth_tracker: 0
        }
    );
    for ((name, a), (_, b)) in before.iter().zip(weights(&scaled)) {
        assert!(a.equal(&b), "{name} changed on a skipped step");
    }
    for (a, b) in momentum.iter().zip(scaled.optimizer.state().into_values()) {
        assert!(a.equal(&b), "a momentum buffer changed on a skipped step");
    }
}
