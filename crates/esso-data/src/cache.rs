//! The cache folder, the downloadable datasets, and their files with published checksums.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// One file of a downloadable dataset: its standard name and the sha256 (lowercase hex) of
/// its **uncompressed** bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec<'a> {
    /// Standard file name, e.g. `train-images-idx3-ubyte`; the name in the cache.
    pub name: &'a str,
    /// sha256 of the uncompressed file, 64 lowercase hex digits.
    pub sha256: &'a str,
}

/// The four MNIST files with the sha256 of the original files (data-sources.md).
pub const MNIST_FILES: [FileSpec<'static>; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

/// The four Fashion-MNIST files with the sha256 of the original files (data-sources.md).
pub const FASHION_MNIST_FILES: [FileSpec<'static>; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
];

/// A dataset that is downloaded into the cache rather than embedded or generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteDataset {
    /// MNIST handwritten digits, 60000 / 10000, 28x28.
    Mnist,
    /// Fashion-MNIST (Zalando), 60000 / 10000, 28x28.
    FashionMnist,
}

impl RemoteDataset {
    /// Every downloadable dataset, in the order `esso fetch all` fetches them.
    pub const ALL: [RemoteDataset; 2] = [RemoteDataset::Mnist, RemoteDataset::FashionMnist];

    /// The name `esso fetch` takes and the cache sub-folder: `mnist` or `fashion-mnist`.
    pub fn name(self) -> &'static str {
        match self {
            RemoteDataset::Mnist => "mnist",
            RemoteDataset::FashionMnist => "fashion-mnist",
        }
    }

    /// Parses [`Self::name`].
    ///
    /// # Errors
    /// [`DataError::NotFetchable`] for any other name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "mnist" => Ok(RemoteDataset::Mnist),
            "fashion-mnist" => Ok(RemoteDataset::FashionMnist),
            _ => Err(DataError::NotFetchable { name: name.to_owned() }),
        }
    }

    /// The four files, in the order train images, train labels, test images, test labels.
    pub fn files(self) -> &'static [FileSpec<'static>; 4] {
        match self {
            RemoteDataset::Mnist => &MNIST_FILES,
            RemoteDataset::FashionMnist => &FASHION_MNIST_FILES,
        }
    }

    /// The dataset's folder inside `cache`: `<cache>/mnist` or `<cache>/fashion-mnist`.
    pub fn dir(self, cache: &Path) -> PathBuf {
        cache.join(self.name())
    }
}

/// The cache folder from the process environment; see [`cache_dir_from`].
///
/// # Errors
/// [`DataError::NoCacheDir`] if none of the variables is set.
pub fn default_cache_dir() -> Result<PathBuf> {
    cache_dir_from(|key| std::env::var_os(key))
}

/// The cache folder given a way to read environment variables: `$ESSO_DATA` if set and
/// non-empty, else `$XDG_CACHE_HOME/esso` if that is an absolute path, else
/// `$HOME/.cache/esso`.
///
/// The folder is not created here.
///
/// # Errors
/// [`DataError::NoCacheDir`] if none of the variables gives a folder.
///
/// # Examples
/// ```
/// use std::path::PathBuf;
/// let env = |key: &str| (key == "HOME").then(|| "/home/ada".into());
/// assert_eq!(esso_data::cache_dir_from(env)?, PathBuf::from("/home/ada/.cache/esso"));
/// # Ok::<(), esso_data::DataError>(())
/// ```
pub fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let non_empty = |key: &str| env(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty("ESSO_DATA") {
        return Ok(dir);
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return Ok(dir.join("esso"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(home.join(".cache").join("esso"));
    }
    Err(DataError::NoCacheDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn cache_dir_precedence() {
        let all = [("ESSO_DATA", "/d"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_dir_from(env(&all)).unwrap(), PathBuf::from("/d"));
        let no_esso = [("ESSO_DATA", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_dir_from(env(&no_esso)).unwrap(), PathBuf::from("/x/esso"));
        let relative_xdg = [("XDG_CACHE_HOME", "rel"), ("HOME", "/h")];
        assert_eq!(cache_dir_from(env(&relative_xdg)).unwrap(), PathBuf::from("/h/.cache/esso"));
        assert!(matches!(cache_dir_from(env(&[])), Err(DataError::NoCacheDir)));
    }

    #[test]
    fn names_round_trip() {
        for d in RemoteDataset::ALL {
            assert_eq!(RemoteDataset::from_name(d.name()).unwrap(), d);
            assert!(d.files().iter().all(|f| f.sha256.len() == 64));
        }
        assert!(matches!(RemoteDataset::from_name("digits"), Err(DataError::NotFetchable { .. })));
    }
}
