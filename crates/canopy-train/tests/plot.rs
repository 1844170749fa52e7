//! PNG plots render (with the embedded font) and reject bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common_fs;

use canopy_train::plot::{plot_confusion, plot_series, ConfusionNorm};
use common_fs::file_names;

fn is_png(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    bytes
}

#[test]
fn curves_and_confusion_matrices_are_written_and_text_changes_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let series = vec![
        (
            "train loss".to_string(),
            vec![(1.0, 1.2), (2.0, 0.8), (3.0, 0.5)],
        ),
        (
            "val loss".to_string(),
            vec![(1.0, 1.3), (2.0, 0.9), (3.0, 0.7)],
        ),
    ];
    let a = dir.path().join("a.png");
    let b = dir.path().join("b.png");
    plot_series(&a, "loss per epoch", "epoch", "loss", &series).unwrap();
    plot_series(&b, "loss per epocj", "epoch", "loss", &series).unwrap();
    // Only the title differs, so differing files show that text is drawn.
    assert_ne!(is_png(&a), is_png(&b));

    let counts = vec![vec![50, 3, 2], vec![4, 40, 6], vec![0, 5, 45]];
    let names: Vec<String> = ["water", "forest", "urban"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let c = dir.path().join("c.png");
    let d = dir.path().join("d.png");
    plot_confusion(
        &c,
        &counts,
        &names,
        ConfusionNorm::Counts,
        "confusion (counts)",
    )
    .unwrap();
    plot_confusion(
        &d,
        &counts,
        &names,
        ConfusionNorm::Rows,
        "confusion (counts)",
    )
    .unwrap();
    assert_ne!(is_png(&c), is_png(&d));
    // A single class and a ten-class matrix render too.
    let one = dir.path().join("one.png");
    plot_confusion(
        &one,
        &[vec![7]],
        &["only".to_string()],
        ConfusionNorm::Rows,
        "one class",
    )
    .unwrap();
    is_png(&one);
    let ten: Vec<Vec<u64>> = (0..10u64)
        .map(|i| {
            (0..10u64)
                .map(|j| {
                    if i == j {
                        100 + 10 * i
                    } else {
                        (i * 7 + j * 3) % 11
                    }
                })
                .collect()
        })
        .collect();
    let ten_names: Vec<String> = (0..10).map(|i| format!("class {i}")).collect();
    let t = dir.path().join("ten.png");
    plot_confusion(&t, &ten, &ten_names, ConfusionNorm::Counts, "ten classes").unwrap();
    is_png(&t);
    // Written atomically: only the finished PNGs are left, no temporary file; a plot into a
    // missing folder is an error and leaves nothing behind.
    let missing = dir.path().join("no-such-dir").join("e.png");
    let err = plot_series(&missing, "t", "x", "y", &series).unwrap_err();
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert_eq!(
        file_names(dir.path()),
        ["a.png", "b.png", "c.png", "d.png", "one.png", "ten.png"]
    );
    if let Ok(keep) = std::env::var("CANOPY_PLOT_DIR") {
        for f in ["a.png", "c.png", "d.png", "one.png", "ten.png"] {
            std::fs::copy(dir.path().join(f), std::path::Path::new(&keep).join(f)).unwrap();
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.png");
    let names: Vec<String> = vec!["a".into(), "b".into()];
    assert!(plot_confusion(
        &p,
        &[vec![1, 2], vec![3]],
        &names,
        ConfusionNorm::Counts,
        "t"
    )
    .is_err());
    assert!(plot_confusion(
        &p,
        &[vec![1, 2], vec![3, 4]],
        &names[..1],
        ConfusionNorm::Counts,
        "t"
    )
    .is_err());
    assert!(plot_series(&p, "t", "x", "y", &[("s".into(), vec![(0.0, f64::NAN)])]).is_err());
    assert!(!p.exists());
}
