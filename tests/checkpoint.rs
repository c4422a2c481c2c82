//! Hugging Face GPT-2 checkpoints: the shared fixture loads, round-trips bit for bit,
//! loads without the `transformer.` prefix, and every malformed file is an error that
//! names the tensor and both shapes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use wgformer::model::checkpoint::{load_gpt2_safetensors, save_gpt2_safetensors};
use wgformer::model::params::{gpt2_param_specs, init_params, num_parameters};
use wgformer::model::Gpt2Config;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gpt2-tiny")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgformer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Write `tensors` (name → (dtype, shape, bytes)) as a safetensors file.
fn write_raw(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: BTreeMap<String, TensorView> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn fixture_tensors(cfg: &Gpt2Config, prefix: &str) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let values = load_gpt2_safetensors(&fixture().join("model.safetensors"), cfg).unwrap();
    gpt2_param_specs(cfg)
        .into_iter()
        .zip(values)
        .map(|(s, v)| {
            (
                format!("{prefix}{}", s.name),
                Dtype::F32,
                s.shape,
                bytemuck::cast_slice(&v).to_vec(),
            )
        })
        .collect()
}

#[test]
fn fixture_config_and_weights_load() {
    let cfg = Gpt2Config::from_file(&fixture().join("config.json")).unwrap();
    assert_eq!(
        (
            cfg.vocab_size,
            cfg.n_positions,
            cfg.n_embd,
            cfg.n_layer,
            cfg.n_head
        ),
        (101, 32, 48, 2, 4)
    );
    let values = load_gpt2_safetensors(&fixture().join("model.safetensors"), &cfg).unwrap();
    assert_eq!(values.len(), 2 + 12 * 2 + 2);
    let total: usize = values.iter().map(|v| v.len()).sum();
    assert_eq!(total, num_parameters(&cfg));
}

#[test]
fn save_then_load_round_trips_bit_for_bit() {
    let cfg = Gpt2Config::from_file(&fixture().join("config.json")).unwrap();
    let values = load_gpt2_safetensors(&fixture().join("model.safetensors"), &cfg).unwrap();
    let path = scratch("roundtrip.safetensors");
    save_gpt2_safetensors(&path, &cfg, &values).unwrap();
    let again = load_gpt2_safetensors(&path, &cfg).unwrap();
    for (a, b) in values.iter().zip(&again) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    // Saved names carry the prefix, exactly as the fixture (save_pretrained) has them.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<_> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let fbytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let fst = safetensors::SafeTensors::deserialize(&fbytes).unwrap();
    let mut fnames: Vec<_> = fst.names().into_iter().map(str::to_string).collect();
    fnames.sort();
    assert_eq!(names, fnames);
    // A second save of the same values is byte-identical.
    let path2 = scratch("roundtrip2.safetensors");
    save_gpt2_safetensors(&path2, &cfg, &again).unwrap();
    assert_eq!(bytes, std::fs::read(&path2).unwrap());
}

#[test]
fn names_without_prefix_and_odd_sizes_load() {
    let cfg = Gpt2Config::new(37, 9, 20, 3, 5);
    let values = init_params(&cfg, 1);
    let tensors: Vec<_> = gpt2_param_specs(&cfg)
        .into_iter()
        .zip(&values)
        .map(|(s, v)| {
            (
                s.name,
                Dtype::F32,
                s.shape,
                bytemuck::cast_slice(v).to_vec(),
            )
        })
        .collect();
    let path = scratch("noprefix.safetensors");
    write_raw(&path, &tensors);
    let loaded = load_gpt2_safetensors(&path, &cfg).unwrap();
    assert_eq!(loaded, values);
}

#[test]
fn malformed_checkpoints_are_named_errors() {
    let cfg = Gpt2Config::from_file(&fixture().join("config.json")).unwrap();

    // Missing tensor.
    let mut t = fixture_tensors(&cfg, "transformer.");
    t.retain(|x| x.0 != "transformer.h.1.mlp.c_fc.bias");
    let path = scratch("missing.safetensors");
    write_raw(&path, &t);
    let msg = load_gpt2_safetensors(&path, &cfg).unwrap_err().to_string();
    assert!(
        msg.contains("h.1.mlp.c_fc.bias") && msg.contains("192"),
        "{msg}"
    );

    // Wrong shape.
    let mut t = fixture_tensors(&cfg, "transformer.");
    let i = t
        .iter()
        .position(|x| x.0 == "transformer.h.0.attn.c_attn.weight")
        .unwrap();
    t[i].2 = vec![144, 48];
    let path = scratch("shape.safetensors");
    write_raw(&path, &t);
    let msg = load_gpt2_safetensors(&path, &cfg).unwrap_err().to_string();
    assert!(
        msg.contains("h.0.attn.c_attn.weight")
            && msg.contains("[48, 144]")
            && msg.contains("[144, 48]"),
        "{msg}"
    );

    // Wrong dtype.
    let mut t = fixture_tensors(&cfg, "transformer.");
    let i = t
        .iter()
        .position(|x| x.0 == "transformer.ln_f.bias")
        .unwrap();
    t[i].1 = Dtype::I32;
    let path = scratch("dtype.safetensors");
    write_raw(&path, &t);
    let msg = load_gpt2_safetensors(&path, &cfg).unwrap_err().to_string();
    assert!(
        msg.contains("ln_f.bias") && msg.contains("F32") && msg.contains("I32"),
        "{msg}"
    );

    // Not a safetensors file at all, and a missing file.
    let path = scratch("garbage.safetensors");
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let msg = load_gpt2_safetensors(&path, &cfg).unwrap_err().to_string();
    assert!(msg.contains("garbage.safetensors"), "{msg}");
    let msg = load_gpt2_safetensors(&scratch("absent.safetensors"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absent.safetensors"), "{msg}");
}

#[test]
fn configs_are_validated() {
    assert!(Gpt2Config::preset("gpt2", None).is_ok());
    let msg = Gpt2Config::preset("gpt5", None).unwrap_err().to_string();
    assert!(msg.contains("gpt5") && msg.contains("baby"), "{msg}");
    let path = scratch("bad_config.json");
    std::fs::write(
        &path,
        r#"{"vocab_size": 10, "n_positions": 8, "n_embd": 30, "n_layer": 1, "n_head": 4}"#,
    )
    .unwrap();
    let msg = Gpt2Config::from_file(&path).unwrap_err().to_string();
    assert!(
        msg.contains("bad_config.json") && msg.contains("n_head"),
        "{msg}"
    );
    let path = scratch("relu_config.json");
    std::fs::write(&path, r#"{"vocab_size": 10, "n_positions": 8, "n_embd": 32, "n_layer": 1, "n_head": 4, "activation_function": "relu"}"#).unwrap();
    let msg = Gpt2Config::from_file(&path).unwrap_err().to_string();
    assert!(msg.contains("relu"), "{msg}");
}

#[test]
fn gpt2_bpe_matches_known_ids() {
    let tok = wgformer::tokenizer::gpt2_bpe().unwrap();
    let ids = wgformer::tokenizer::encode(&tok, "Hello world").unwrap();
    assert_eq!(ids, vec![15496, 995]);
    let text = " The quick brown fox jumps over the lazy dog.\nÀ bientôt 🙂";
    let ids = wgformer::tokenizer::encode(&tok, text).unwrap();
    assert_eq!(wgformer::tokenizer::decode(&tok, &ids).unwrap(), text);
    assert_eq!(tok.get_vocab_size(false), 50257);
}
