//! The matmul tuner (src/kernels/tune.rs): it times every kernel family the adapter can
//! run and every tile shape of the tiled kernel and keeps the fastest of each, caches the choice per adapter on disk, takes a cached choice
//! without measuring again, and survives a corrupt cache file. One test, since it points
//! the process-wide WGFORMER_CACHE_DIR at a temporary directory.

use wgformer::gpu::{MatmulKernel, Needs};
use wgformer::kernels::matmul::TileConfig;
use wgformer::kernels::tune::{cache_key, cache_path, measure, tile_key, TuneEntry};
use wgformer::testing::test_contexts;

#[test]
fn tuning_measures_caches_and_reuses_the_choice() {
    let dir = std::env::temp_dir().join(format!("wgformer-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_var("WGFORMER_CACHE_DIR", &dir);
    std::env::remove_var("WGFORMER_MATMUL");
    std::env::remove_var("WGFORMER_TUNE");
    let path = cache_path().unwrap();
    assert_eq!(path, dir.join("matmul-tune.json"));

    // A fresh cache: opening a context tunes and writes the choice for its adapter.
    let ctxs = test_contexts(&Needs::default());
    let text = std::fs::read_to_string(&path).expect("tuning wrote the cache file");
    let cache: std::collections::BTreeMap<String, TuneEntry> = serde_json::from_str(&text).unwrap();
    for ctx in &ctxs {
        let e = cache
            .get(&cache_key(ctx))
            .unwrap_or_else(|| panic!("no cache entry for {}", ctx.adapter_name()));
        let families = || e.gflops.iter().filter(|(k, _)| !k.contains(' '));
        let best = families().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
        assert_eq!(&e.kernel, best.0, "the fastest family wins: {:?}", e.gflops);
        assert!(e.gflops.contains_key("tiled"));
        assert_eq!(e.gflops.contains_key("rows"), !ctx.is_swiftshader());
        // Every tile shape was timed; the fastest is the tiled kernel's, and its score.
        let best_tile = TileConfig::CANDIDATES
            .into_iter()
            .max_by(|a, b| e.gflops[&tile_key(*a)].total_cmp(&e.gflops[&tile_key(*b)]))
            .unwrap();
        assert_eq!(
            e.tile, best_tile,
            "the fastest tile shape wins: {:?}",
            e.gflops
        );
        if !ctx.is_cpu() {
            // Measured on the whole products (a CPU adapter sweeps on fewer rows).
            assert_eq!(e.gflops["tiled"], e.gflops[&tile_key(best_tile)]);
        }
        assert_eq!(ctx.tile_config(), e.tile, "the context uses the tuned tile");
        assert_eq!(
            e.gflops.contains_key("subgroup"),
            ctx.subgroup_size().is_some() && !ctx.is_swiftshader(),
            "the subgroup kernel is a candidate exactly where the device has subgroups \
             (and is not SwiftShader, which runs the tiled kernel alone)"
        );
        assert_eq!(
            format!("{:?}", ctx.matmul_kernel()).to_lowercase(),
            e.kernel
        );
        eprintln!("{}: {} {:?}", ctx.adapter_name(), e.kernel, e.gflops);
        // measure() runs again on a live context, leaving a family set.
        let again = measure(ctx).unwrap();
        assert_eq!(again.gflops.len(), e.gflops.len());
    }
    drop(ctxs);

    // A cached choice is taken as it stands: pretend the row kernel won everywhere.
    let mut forged = cache.clone();
    for e in forged.values_mut() {
        e.kernel = "rows".into();
    }
    std::fs::write(&path, serde_json::to_string(&forged).unwrap()).unwrap();
    for ctx in test_contexts(&Needs::default()) {
        let rows = if ctx.is_swiftshader() {
            MatmulKernel::Tiled
        } else {
            MatmulKernel::Rows
        };
        assert_eq!(ctx.matmul_kernel(), rows, "the cached choice is used");
    }

    // A corrupt cache is measured over, never an error.
    std::fs::write(&path, "{ not json").unwrap();
    for ctx in test_contexts(&Needs::default()) {
        assert_ne!(ctx.matmul_kernel(), MatmulKernel::Auto);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `WGFORMER_TILE` names a tile shape the kernel can run, or the error says what is wrong.
#[test]
fn tile_shapes_parse_from_their_env_form() {
    for t in TileConfig::CANDIDATES {
        let text = format!("{},{},{},{}", t.wx, t.wy, t.tk, t.rb);
        assert_eq!(text.parse::<TileConfig>().unwrap(), t, "{text}");
    }
    assert_eq!(
        " 16, 16, 8, 8".parse::<TileConfig>().unwrap(),
        TileConfig::new(16, 16, 8, 8)
    );
    let element = "16,16,8,8,element".parse::<TileConfig>().unwrap();
    assert_eq!(
        element,
        TileConfig {
            element: true,
            ..TileConfig::new(16, 16, 8, 8)
        }
    );
    assert_eq!(TileConfig::unpack(element.pack()), element);
    for t in TileConfig::CANDIDATES {
        assert_eq!(TileConfig::unpack(t.pack()), t);
    }
    for (bad, why) in [
        ("16,16,8", "not four numbers"),
        ("16,16,8,x", "not four whole numbers"),
        ("16,16,8,8,vec4", "not four whole numbers"),
        ("16,16,8,8,element,element", "not four whole numbers"),
        ("16,16,8,2", "rb must be 4 or 8"),
        ("16,16,6,4", "tk must be a multiple of 4"),
        ("32,16,8,4", "wx·wy must be 1 to 256"),
        ("16,16,32,8", "more than 16 KiB"),
    ] {
        let e = bad.parse::<TileConfig>().unwrap_err().to_string();
        assert!(e.contains("WGFORMER_TILE") && e.contains(why), "{bad}: {e}");
    }
}
