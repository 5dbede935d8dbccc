//! The model against a reference no one here wrote: sentence-transformers (PyTorch) vectors
//! in node-lite/model/tests/data/golden.json (made by scripts/golden.py).

mod common;

use node_lite::model::fast::kernel::Isa;
use node_lite::model::fast::qkernel::{QIsa, WeightBits};
use node_lite::model::{Backend, Embedder, Precision};
use node_lite::vector::cosine;
use node_lite::weights::source::load_dir;

/// The default CPU engine (the fast fused encoder, integer weights where SIMD exists).
fn embedder(variant: &str) -> Embedder {
    embedder_on(variant, Backend::Cpu)
}

fn embedder_on(variant: &str, backend: Backend) -> Embedder {
    let w = load_dir(&common::variant_dir(variant)).expect("weights verify and load");
    Embedder::load(&w, backend).expect("model builds")
}

fn min_cosine_to_golden(e: &Embedder) -> (f32, String) {
    let g = common::golden();
    assert!(
        g.items.len() >= 30,
        "golden file has {} items",
        g.items.len()
    );
    let texts: Vec<&str> = g.items.iter().map(|i| i.text.as_str()).collect();
    let ours = e.embed(&texts).expect("embed");
    let mut worst = (f32::MAX, String::new());
    for (item, v) in g.items.iter().zip(&ours) {
        assert_eq!(v.len(), 384);
        let c = cosine(v, &item.vector);
        if c < worst.0 {
            worst = (c, item.text.chars().take(40).collect());
        }
    }
    worst
}

#[test]
fn f32_matches_sentence_transformers() {
    let e = embedder("f32");
    let (min, text) = min_cosine_to_golden(&e);
    eprintln!(
        "f32 {}: min cosine to reference {min:.9} ({text:?})",
        e.engine_name()
    );
    assert!(min >= 0.9999, "min cosine {min} on {text:?}");
}

#[test]
fn f16_stays_close_to_reference() {
    let e = embedder("f16");
    let (min, text) = min_cosine_to_golden(&e);
    eprintln!(
        "f16 {}: min cosine to reference {min:.9} ({text:?})",
        e.engine_name()
    );
    assert!(min >= 0.995, "min cosine {min} on {text:?}");
}

#[test]
fn flex_matches_sentence_transformers() {
    for (variant, bound) in [("f32", 0.9999), ("f16", 0.995)] {
        let (min, text) = min_cosine_to_golden(&embedder_on(variant, Backend::Flex));
        eprintln!("{variant} burn flex: min cosine to reference {min:.9} ({text:?})");
        assert!(min >= bound, "min cosine {min} on {text:?}");
    }
}

#[test]
fn every_compiled_fast_kernel_matches_the_reference() {
    let w = load_dir(&common::variant_dir("f32")).expect("weights verify and load");
    let exact = Embedder::load_with(&w, Backend::Cpu, Precision::Exact).expect("model builds");
    assert!(
        !exact.engine_name().contains("int"),
        "--precision exact runs f32: {}",
        exact.engine_name()
    );
    for isa in Isa::available() {
        let e = Embedder::fast_with(&w, isa).expect("model builds");
        let (min, text) = min_cosine_to_golden(&e);
        eprintln!("f32 fast {}: min cosine {min:.9} ({text:?})", isa.name());
        assert!(min >= 0.9999, "{isa:?}: min cosine {min} on {text:?}");
    }
}

#[test]
fn published_pairs_reproduce() {
    for backend in [Backend::Cpu, Backend::Flex] {
        published_pairs_on(&embedder_on("f32", backend));
    }
}

fn published_pairs_on(e: &Embedder) {
    let pairs = [
        (
            "The new movie is awesome",
            "The new movie is so great",
            0.8939,
        ),
        (
            "The cat sits outside",
            "The dog plays in the garden",
            0.2838,
        ),
        ("I love pasta", "Do you like pizza?", 0.5096),
        ("A man is playing guitar", "A woman watches TV", -0.0327),
    ];
    for (a, b, want) in pairs {
        let v = e.embed(&[a, b]).unwrap();
        let got = cosine(&v[0], &v[1]);
        eprintln!(
            "{}: {a:?}/{b:?}: {got:.4} (published {want})",
            e.engine_name()
        );
        assert!((got - want).abs() <= 0.001, "{a:?}/{b:?}: {got} vs {want}");
    }
}

#[test]
fn batching_and_padding_do_not_change_vectors() {
    for backend in [Backend::Cpu, Backend::Flex] {
        batching_on(&mut embedder_on("f32", backend));
    }
}

fn batching_on(e: &mut Embedder) {
    let g = common::golden();
    let texts: Vec<&str> = g.items.iter().map(|i| i.text.as_str()).collect();
    e.batch_size = 32;
    let batched = e.embed(&texts).unwrap();
    e.batch_size = 1;
    let single = e.embed(&texts).unwrap();
    for (a, b) in batched.iter().zip(&single) {
        assert!(cosine(a, b) > 0.99999);
    }
    // Order is preserved even though batches are sorted by length.
    let rev: Vec<&str> = texts.iter().rev().copied().collect();
    e.batch_size = 7;
    let reversed = e.embed(&rev).unwrap();
    for (a, b) in reversed.iter().rev().zip(&single) {
        assert!(cosine(a, b) > 0.99999);
    }
}

#[test]
fn truncation_at_256_tokens_counts_cls_and_sep() {
    let e = embedder("f32");
    let long = "word ".repeat(5000);
    let ids = e.tokenize(&long).unwrap();
    assert_eq!(ids.len(), 256);
    assert_eq!(ids.first(), Some(&101)); // [CLS]
    assert_eq!(ids.last(), Some(&102)); // [SEP]
    // A 10 MB line is embedded without trouble (and equals its first 256 tokens).
    let huge = "lorem ipsum dolor sit amet ".repeat(400_000);
    let v = e.embed(&[huge.as_str(), long.as_str()]).unwrap();
    assert_eq!(v[0].len(), 384);
    assert!(e.embed(&[""]).unwrap()[0].iter().all(|x| x.is_finite()));
}

#[test]
fn quantized_dense_layers_stay_close_to_reference() {
    // The default CPU engines (browser and native): dense layers on the integer kernel, int8
    // from the f16 record (the compact download) and int12 from the f32 one (held to the f32
    // bound); also int8 from f32 to show where its error comes from. Every integer tile this
    // machine runs (here: scalar, AVX2, AVX-VNNI, AVX-512 VNNI) runs the whole model.
    let isa = Isa::best();
    for (variant, bits, bound) in [
        ("f16", WeightBits::Int8, 0.995),
        ("f32", WeightBits::Int8, 0.995),
        ("f32", WeightBits::Int12, 0.9999),
    ] {
        let w = load_dir(&common::variant_dir(variant)).expect("weights verify and load");
        for tile in QIsa::available() {
            let e = Embedder::fast_tiles(&w, isa, Some((tile, bits))).expect("model builds");
            let (min, text) = min_cosine_to_golden(&e);
            eprintln!(
                "{variant} {}: min cosine {min:.9} ({text:?})",
                e.engine_name()
            );
            assert!(
                min >= bound,
                "{tile:?} {bits:?}: min cosine {min} on {text:?}"
            );
            assert!(
                e.engine_name().contains(&tile.name(bits)),
                "{}",
                e.engine_name()
            );
        }
    }
    // The default engine is the quantized one wherever a SIMD integer tile exists.
    let w = load_dir(&common::variant_dir("f32")).expect("weights verify and load");
    let e = Embedder::load(&w, Backend::Cpu).expect("model builds");
    if QIsa::for_isa(isa) != QIsa::Scalar {
        let want = QIsa::for_isa(isa).name(WeightBits::Int12);
        assert!(e.engine_name().contains(&want), "{}", e.engine_name());
    }
}
