//! The checkpoint file: round trip, and clear errors for every kind of bad file.

use crate::common;

use std::fs;

use common::state_dict;
use inception::checkpoint::{self, Meta};
use inception::data::transform::Normalization;
use inception::model::{Arch, Model, NetConfig};
use tch::{Device, Kind, Tensor};

fn seed_checkpoint(dir: &std::path::Path) -> (std::path::PathBuf, Model, Meta) {
    let mut model = Model::new(NetConfig::new(Arch::Seed, 2), Device::Cpu).unwrap();
    model.load_state_dict(&state_dict("seed_2")).unwrap();
    let meta = Meta::new(
        model.config,
        vec!["Monkey Pox".into(), "Others".into()],
        224,
        Normalization::IMAGENET,
        "test".into(),
    );
    let path = dir.join("model.pt");
    checkpoint::save(&path, &model, &meta).unwrap();
    (path, model, meta)
}

#[test]
fn a_saved_checkpoint_loads_with_the_same_record_and_logits() {
    let dir = tempfile::tempdir().unwrap();
    let (path, model, meta) = seed_checkpoint(dir.path());
    let loaded = checkpoint::load(&path, Device::Cpu).unwrap();
    assert_eq!(loaded.meta.classes, meta.classes);
    assert_eq!(loaded.meta.arch, Arch::Seed);
    assert_eq!(loaded.meta.format_version, checkpoint::FORMAT_VERSION);
    assert_eq!(loaded.meta.checksum.len(), 8);
    let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let a = tch::no_grad(|| model.forward_t(&x, false)).unwrap().logits;
    let b = tch::no_grad(|| loaded.model.forward_t(&x, false))
        .unwrap()
        .logits;
    assert_eq!(f64::try_from((a - b).abs().max()).unwrap(), 0.0);
    // Every variable, running statistics included, came back.
    let (sa, sb) = (model.state_dict(), loaded.model.state_dict());
    assert_eq!(sa.len(), sb.len());
    for (k, t) in &sa {
        assert!(t.equal(&sb[k]), "{k} differs");
    }
    // No temporary file is left beside it.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn a_checkpoint_is_a_plain_state_dict_for_safetensors_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = seed_checkpoint(dir.path());
    let file = checkpoint::read_safetensors(&path).unwrap();
    let expected = state_dict("seed_2");
    assert_eq!(
        file.tensors.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(file.tensors["conv1.weight"].equal(&expected["conv1.weight"]));
}

#[test]
fn a_truncated_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = seed_checkpoint(dir.path());
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", checkpoint::load(&path, Device::Cpu).unwrap_err());
    assert!(err.contains("model.pt"), "{err}");
    assert!(err.contains("truncated or corrupted"), "{err}");
}

#[test]
fn a_corrupted_byte_fails_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = seed_checkpoint(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1000] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", checkpoint::load(&path, Device::Cpu).unwrap_err());
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("corrupted"), "{err}");
}

#[test]
fn a_foreign_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pt");
    fs::write(
        &text,
        "this is not a checkpoint, just text that is long enough",
    )
    .unwrap();
    let err = format!("{:#}", checkpoint::load(&text, Device::Cpu).unwrap_err());
    assert!(
        err.contains("notes.pt") && err.contains("not a safetensors file"),
        "{err}"
    );

    // A safetensors state_dict without our record is recognised as such.
    let bare = dir.path().join("bare.safetensors");
    let t = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("w", &t)], &bare).unwrap();
    let err = format!("{:#}", checkpoint::load(&bare, Device::Cpu).unwrap_err());
    assert!(err.contains("without inception metadata"), "{err}");
    assert!(err.contains("inception import"), "{err}");

    let missing = dir.path().join("absent.pt");
    let err = format!("{:#}", checkpoint::load(&missing, Device::Cpu).unwrap_err());
    assert!(err.contains("absent.pt"), "{err}");
}

#[test]
fn a_checkpoint_whose_record_names_another_network_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = seed_checkpoint(dir.path());
    // Rewrite the record to claim googlenet; the weights stay the seed's.
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let forged = header.replacen(r#"\"arch\":\"seed\""#, r#"\"arch\":\"googlenet\""#, 1);
    assert_ne!(forged, header, "the record was not found in the header");
    let mut out = (forged.len() as u64).to_le_bytes().to_vec();
    out.extend(forged.as_bytes());
    out.extend(&bytes[8 + n..]);
    fs::write(&path, out).unwrap();
    let err = format!("{:#}", checkpoint::load(&path, Device::Cpu).unwrap_err());
    assert!(err.contains("do not fit the googlenet network"), "{err}");
    assert!(
        err.contains("missing") && err.contains("unexpected"),
        "{err}"
    );
}
