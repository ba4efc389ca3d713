#![allow(clippy::unwrap_used)]
//! Subsets, shuffling and batches on the embedded digits and synthetic sets.

use esso_data::{Subset, digits, epoch_permutation};

#[test]
fn per_class_subsets_are_stratified_distinct_and_seeded() {
    let ds = digits().unwrap();
    let a =
        ds.subset(Subset::PerClass { k: 7, seed: 3 }, Subset::PerClass { k: 2, seed: 3 }).unwrap();
    assert_eq!(a.train().class_counts(10), vec![7; 10]);
    assert_eq!(a.test().class_counts(10), vec![2; 10]);
    assert_eq!(a.n_classes(), 10);
    let same = ds.subset(Subset::PerClass { k: 7, seed: 3 }, Subset::All).unwrap();
    assert_eq!(a.train(), same.train());
    let other = ds.subset(Subset::PerClass { k: 7, seed: 4 }, Subset::All).unwrap();
    assert_ne!(a.train(), other.train());
    // Every chosen row is a distinct row of the original training split.
    let originals: Vec<Vec<u64>> = ds
        .train()
        .features()
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect();
    let mut found: Vec<usize> = a
        .train()
        .features()
        .rows()
        .into_iter()
        .map(|r| {
            let bits: Vec<u64> = r.iter().map(|x| x.to_bits()).collect();
            originals.iter().position(|o| *o == bits).unwrap()
        })
        .collect();
    let n_found = found.len();
    found.dedup();
    assert_eq!(found.len(), n_found);
}

#[test]
fn first_k_keeps_file_order() {
    let ds = digits().unwrap();
    let small = ds.subset(Subset::First(15), Subset::First(5)).unwrap();
    assert_eq!(small.train().labels(), &ds.train().labels()[..15]);
    assert_eq!(small.test(), &ds.test().select(&[0, 1, 2, 3, 4]));
}

#[test]
fn an_epoch_visits_every_sample_once_in_a_seeded_order() {
    let ds = digits().unwrap();
    let train = ds.train();
    let n = train.n_samples();
    let order = epoch_permutation(n, 123, 4);
    assert_eq!(order, epoch_permutation(n, 123, 4));
    let mut seen = vec![0_usize; n];
    let mut labels = Vec::new();
    for batch in train.batches(&order, 64).unwrap() {
        labels.extend_from_slice(batch.labels());
    }
    for &i in &order {
        seen[i] += 1;
    }
    assert!(seen.iter().all(|&c| c == 1));
    let expected: Vec<usize> = order.iter().map(|&i| train.labels()[i]).collect();
    assert_eq!(labels, expected);
    assert_eq!(train.batches(&order, 64).unwrap().len(), n.div_ceil(64));
}
