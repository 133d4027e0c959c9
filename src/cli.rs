//! The command line: clap derive structs whose doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model::Arch;

/// Train, evaluate and run InceptionV1 (GoogLeNet) image classifiers on libtorch.
#[derive(Debug, Parser)]
#[command(name = "inception", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every layer with its output shape, parameters and multiply-accumulates (MACs),
    /// and what each inception block's 1×1 reductions save.
    Summary(SummaryArgs),
    /// Turn a PyTorch state_dict saved as safetensors into a checkpoint that predict accepts.
    Import(ImportArgs),
    /// Classify images with a checkpoint: top classes and their probabilities.
    Predict(PredictArgs),
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
    /// The PyTorch state_dict, saved with `safetensors.torch.save_file(model.state_dict(), …)`.
    #[arg(long, value_name = "STATE_DICT.safetensors")]
    pub weights: PathBuf,
    /// Class names in the order of the network's outputs, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "classes_file")]
    pub classes: Vec<String>,
    /// A text file with one class name per line, instead of --classes.
    #[arg(long, conflicts_with = "classes")]
    pub classes_file: Option<PathBuf>,
    /// Side of the square input the network is to be used at.
    #[arg(long, default_value_t = 224)]
    pub image_size: i64,
    /// Per-channel mean for normalisation (default ImageNet's).
    #[arg(long, value_delimiter = ',', num_args = 3)]
    pub mean: Option<Vec<f64>>,
    /// Per-channel std for normalisation (default ImageNet's).
    #[arg(long, value_delimiter = ',', num_args = 3)]
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
    /// The checkpoint to use.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// How many of the most probable classes to show per image (default: all, up to 5).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Print a JSON array with one object per image.
    #[arg(long)]
    pub json: bool,
    /// Images passed through the network at once.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Image files.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}
