//! The building blocks both networks are made of: convolution, BatchNorm, max-pool, linear.
//!
//! Each layer owns its tensors under the var-store path PyTorch would give it (`torch.nn.Conv2d`,
//! `BatchNorm2d`, `MaxPool2d`, `Linear` semantics and state_dict names), so a state_dict moves
//! between PyTorch and this crate without renaming. Each layer also knows its own cost
//! ([`Cost`]) and output shape, which is what `inception summary` prints.

use tch::nn::{Init, Path};
use tch::{Kind, TchError, Tensor};

use crate::onnx::window_out;

/// Output shape of one image, `[channels, height, width]`.
pub type Shape = [i64; 3];

/// Parameters and multiply-accumulates of one layer for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Trainable parameters (weights, biases, BatchNorm scale and shift).
    pub params: i64,
    /// Multiply-accumulates of the convolution or matrix product for one image.
    pub macs: i64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            params: self.params + o.params,
            macs: self.macs + o.macs,
        }
    }
}

impl std::ops::Sub for Cost {
    type Output = Cost;
    fn sub(self, o: Cost) -> Cost {
        Cost {
            params: self.params - o.params,
            macs: self.macs - o.macs,
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

/// How weights are initialised, after the reference each network follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightInit {
    /// PyTorch's default for `Conv2d`/`Linear`: weight and bias uniform in ±1/√fan_in.
    TorchDefault,
    /// torchvision's `GoogLeNet._initialize_weights`: weight ~ N(0, 0.01²) truncated at ±2
    /// (200 σ, so a plain normal), bias PyTorch's default.
    TruncNormal001,
}

impl WeightInit {
    fn weight(self, fan_in: i64) -> Init {
        match self {
            WeightInit::TorchDefault => uniform_fan_in(fan_in),
            WeightInit::TruncNormal001 => Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
        }
    }
}

fn uniform_fan_in(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// The var-store path of `p` as PyTorch would print a module's name: `inception3a.branch1.0`.
pub fn path_name(p: &Path) -> String {
    p.components().collect::<Vec<_>>().join(".")
}

/// The same values with channels-last (NHWC) strides; other ranks are returned as they are.
pub fn channels_last(t: &Tensor) -> Result<Tensor, TchError> {
    if t.dim() != 4 {
        return Ok(t.shallow_clone());
    }
    t.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
}

/// Whether `t` has channels-last strides.
pub fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    t.dim() == 4 && stride[1] == 1 && stride[3] == size[1] && stride[2] == size[1] * size[3]
}

/// A 2-D convolution with square kernel (`torch.nn.Conv2d`): `weight`, optional `bias`.
#[derive(Debug)]
pub struct Conv2d {
    /// Var-store path of the layer (`inception3a.branch2.3`).
    pub name: String,
    weight: Tensor,
    bias: Option<Tensor>,
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    /// Registers `weight` (and `bias` when `bias` is true) under `p`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        bias: bool,
        init: WeightInit,
    ) -> Conv2d {
        let fan_in = in_channels * kernel * kernel;
        let weight = p.var(
            "weight",
            &[out_channels, in_channels, kernel, kernel],
            init.weight(fan_in),
        );
        let bias = bias.then(|| p.var("bias", &[out_channels], uniform_fan_in(fan_in)));
        Conv2d {
            name: path_name(&p),
            weight,
            bias,
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv2d(
            &self.weight,
            self.bias.as_ref(),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }

    pub fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    /// Output shape for an input of shape `s`, `None` when the input is too small.
    pub fn out_shape(&self, s: Shape) -> Option<Shape> {
        let h = window_out(s[1], self.kernel, self.stride, self.padding, false)?;
        let w = window_out(s[2], self.kernel, self.stride, self.padding, false)?;
        Some([self.out_channels, h, w])
    }

    /// Cost of this convolution producing an output of shape `out`.
    pub fn cost(&self, out: Shape) -> Cost {
        conv_cost(
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.bias.is_some(),
            out,
        )
    }
}

/// Parameters and MACs of a k×k convolution from `cin` to `cout` channels producing `out`.
pub fn conv_cost(cin: i64, cout: i64, k: i64, bias: bool, out: Shape) -> Cost {
    let weights = cout * cin * k * k;
    Cost {
        params: weights + if bias { cout } else { 0 },
        macs: weights * out[1] * out[2],
    }
}

/// How a forward pass runs: what training changes, as PyTorch's `train()` does, with BatchNorm
/// and dropout adjustable apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mode {
    /// Training: dropout is active and GoogLeNet's auxiliary heads are computed.
    pub train: bool,
    /// BatchNorm normalises with the batch's statistics and updates its running ones; false:
    /// with the running statistics (eval, or BatchNorm frozen in training).
    pub batch_stats: bool,
    /// The final dropout's probability (`None`: the architecture's).
    pub dropout: Option<f64>,
    /// Training with the backbone frozen: its stochastic parts (EfficientNet's drop-connect)
    /// run as in eval, so the head learns from the features inference will give it.
    pub backbone_frozen: bool,
}

impl Mode {
    /// PyTorch's `train(on)`: batch statistics and the architecture's dropout in training.
    pub fn plain(train: bool) -> Mode {
        Mode {
            train,
            batch_stats: train,
            dropout: None,
            backbone_frozen: false,
        }
    }

    /// The final dropout's probability: `default` unless overridden, 0 outside training.
    pub fn dropout(&self, default: f64) -> f64 {
        match self.train {
            true => self.dropout.unwrap_or(default),
            false => 0.0,
        }
    }
}

/// `torch.nn.BatchNorm2d`: `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`.
#[derive(Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
    eps: f64,
    momentum: f64,
    pub channels: i64,
}

impl BatchNorm2d {
    /// Momentum of the running statistics, PyTorch's default.
    pub const MOMENTUM: f64 = 0.1;

    pub fn new(p: Path, channels: i64, eps: f64) -> BatchNorm2d {
        Self::with_momentum(p, channels, eps, Self::MOMENTUM)
    }

    /// A BatchNorm whose running statistics move by `momentum` per batch (PyTorch's sense).
    pub fn with_momentum(p: Path, channels: i64, eps: f64, momentum: f64) -> BatchNorm2d {
        let weight = p.var("weight", &[channels], Init::Const(1.0));
        let bias = p.var("bias", &[channels], Init::Const(0.0));
        let running_mean = p.zeros_no_train("running_mean", &[channels]);
        let running_var = p.ones_no_train("running_var", &[channels]);
        let num_batches_tracked = p.add(
            "num_batches_tracked",
            Tensor::zeros([], (Kind::Int64, p.device())),
            false,
        );
        BatchNorm2d {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
            eps,
            momentum,
            channels,
        }
    }

    /// In training mode, normalises with the batch statistics and updates the running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        if train {
            let _ = tch::no_grad(|| self.num_batches_tracked.shallow_clone().f_add_scalar_(1))?;
        }
        x.f_batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            self.momentum,
            self.eps,
            true,
        )
    }

    pub fn cost(&self) -> Cost {
        Cost {
            params: 2 * self.channels,
            macs: 0,
        }
    }

    /// The convolution `weight` (and `bias`) with this BatchNorm's running statistics folded
    /// in ([`fold_bn`]), in `weight`'s kind, device and memory layout: for inference here.
    pub fn fold_into(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor), TchError> {
        let _guard = tch::no_grad_guard();
        let (w, b) = fold_bn(
            weight,
            bias,
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
            self.eps,
        )?;
        let (w, b) = (w.f_detach()?, b.f_detach()?);
        let w = if is_channels_last(weight) {
            channels_last(&w)?
        } else {
            w
        };
        Ok((w, b))
    }
}

/// A convolution's weight and bias with a BatchNorm's running statistics folded in:
/// w·γ/√(σ²+ε) and (b − μ)·γ/√(σ²+ε) + β, computed in the tensors' own kind and device.
fn fold_bn(
    weight: &Tensor,
    bias: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor), TchError> {
    let scale = gamma.f_div(&var.f_add_scalar(eps)?.f_sqrt()?)?;
    let w = weight.f_mul(&scale.f_view([-1, 1, 1, 1])?)?;
    let b = match bias {
        Some(b) => b.f_sub(mean)?,
        None => mean.f_neg()?,
    };
    let b = b.f_mul(&scale)?.f_add(beta)?;
    Ok((w, b))
}

/// A convolution followed by BatchNorm and ReLU, the unit every inception branch is made of.
#[derive(Debug)]
pub struct ConvBnRelu {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
    /// The BatchNorm folded into the convolution (weight, bias), for inference only.
    pub folded: Option<(Tensor, Tensor)>,
}

impl ConvBnRelu {
    pub fn new(conv: Conv2d, bn: BatchNorm2d) -> ConvBnRelu {
        ConvBnRelu {
            conv,
            bn,
            folded: None,
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        match (&self.folded, train) {
            (Some((w, b)), false) => {
                let c = &self.conv;
                x.f_conv2d(w, Some(b), [c.stride; 2], [c.padding; 2], [1, 1], 1)?
                    .f_relu_()
            }
            // In place: BatchNorm's backward needs its input, not its output.
            _ => self.bn.forward_t(&self.conv.forward(x)?, train)?.f_relu_(),
        }
    }

    /// Folds the BatchNorm's running statistics into the convolution: w·γ/√(σ²+ε) and
    /// (b − μ)·γ/√(σ²+ε) + β. Inference then skips the BatchNorm pass; training ignores it.
    pub fn fold(&mut self) -> Result<(), TchError> {
        self.folded = Some(
            self.bn
                .fold_into(&self.conv.weight, self.conv.bias.as_ref())?,
        );
        Ok(())
    }

    pub fn out_shape(&self, s: Shape) -> Option<Shape> {
        self.conv.out_shape(s)
    }

    pub fn cost(&self, out: Shape) -> Cost {
        self.conv.cost(out) + self.bn.cost()
    }
}

/// `torch.nn.MaxPool2d` with square window.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool {
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub ceil: bool,
}

impl MaxPool {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_max_pool2d(
            [self.kernel, self.kernel],
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            self.ceil,
        )
    }

    pub fn out_shape(&self, s: Shape) -> Option<Shape> {
        let h = window_out(s[1], self.kernel, self.stride, self.padding, self.ceil)?;
        let w = window_out(s[2], self.kernel, self.stride, self.padding, self.ceil)?;
        Some([s[0], h, w])
    }
}

/// `torch.nn.Linear`: `weight` `[out, in]` and `bias`.
#[derive(Debug)]
pub struct Linear {
    /// Var-store path of the layer (`classifier.2`).
    pub name: String,
    weight: Tensor,
    bias: Tensor,
    pub in_features: i64,
    pub out_features: i64,
}

impl Linear {
    pub fn new(p: Path, in_features: i64, out_features: i64, init: WeightInit) -> Linear {
        let weight = p.var(
            "weight",
            &[out_features, in_features],
            init.weight(in_features),
        );
        let bias = p.var("bias", &[out_features], uniform_fan_in(in_features));
        Linear {
            name: path_name(&p),
            weight,
            bias,
            in_features,
            out_features,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_linear(&self.weight, Some(&self.bias))
    }

    pub fn cost(&self) -> Cost {
        let w = self.in_features * self.out_features;
        Cost {
            params: w + self.out_features,
            macs: w,
        }
    }
}

// ONNX: each layer writes its eval-mode pass into a graph (crate::onnx), under its var-store
// name, BatchNorm folded in f64.
use crate::onnx::{Graph, Value};

impl Conv2d {
    /// The convolution (with its bias) followed by ReLU: the seed's stem.
    pub fn onnx_relu(&self, g: &mut Graph, x: &Value) -> anyhow::Result<Value> {
        let w = g.tensor(&format!("{}.weight", self.name), &self.weight)?;
        let b = match &self.bias {
            Some(b) => g.tensor(&format!("{}.bias", self.name), b)?,
            None => g.init_f32(
                &format!("{}.bias", self.name),
                &[self.out_channels],
                &vec![0.0; self.out_channels as usize],
            ),
        };
        let p = self.padding;
        let y = g.conv(
            x,
            &w,
            &b,
            self.out_channels,
            self.kernel,
            self.stride,
            [p; 4],
            1,
        )?;
        Ok(g.relu(&y))
    }
}

impl BatchNorm2d {
    /// `weight` and `bias` of the convolution before this BatchNorm with its running
    /// statistics folded in ([`fold_bn`]), in f64 on the CPU: for the ONNX graph.
    pub fn folded(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> anyhow::Result<(Tensor, Tensor)> {
        let _guard = tch::no_grad_guard();
        let d = |t: &Tensor| {
            t.f_to_kind(Kind::Double)
                .and_then(|t| t.f_to_device(tch::Device::Cpu))
        };
        let bias = bias.map(d).transpose()?;
        Ok(fold_bn(
            &d(weight)?,
            bias.as_ref(),
            &d(&self.weight)?,
            &d(&self.bias)?,
            &d(&self.running_mean)?,
            &d(&self.running_var)?,
            self.eps,
        )?)
    }
}

impl ConvBnRelu {
    /// Convolution, BatchNorm folded into it, ReLU.
    pub fn onnx(&self, g: &mut Graph, x: &Value) -> anyhow::Result<Value> {
        let c = &self.conv;
        let (w, b) = self.bn.folded(&c.weight, c.bias.as_ref())?;
        let w = g.tensor(&format!("{}.weight", c.name), &w)?;
        let b = g.tensor(&format!("{}.bias", c.name), &b)?;
        let p = c.padding;
        let y = g.conv(x, &w, &b, c.out_channels, c.kernel, c.stride, [p; 4], 1)?;
        Ok(g.relu(&y))
    }
}

impl MaxPool {
    pub fn onnx(&self, g: &mut Graph, x: &Value) -> anyhow::Result<Value> {
        g.max_pool(x, self.kernel, self.stride, self.padding, self.ceil)
    }
}

impl Linear {
    /// `x · Wᵀ + b` of a flat `[N, in]` value.
    pub fn onnx(&self, g: &mut Graph, x: &Value) -> anyhow::Result<Value> {
        let w = g.tensor(&format!("{}.weight", self.name), &self.weight)?;
        let b = g.tensor(&format!("{}.bias", self.name), &self.bias)?;
        Ok(g.linear(x, &w, &b, self.out_features))
    }
}
