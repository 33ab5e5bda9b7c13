//! sacreBLEU's catalogue of test sets, as facts: `data/sacrebleu/catalogue.json`, written from
//! sacreBLEU 2.6.0's own definitions by `scripts/sacrebleu-catalogue.sh`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Error;

/// The catalogue built into gnmt (sacreBLEU 2.6.0's).
const BUILTIN: &str = include_str!("../../../data/sacrebleu/catalogue.json");

/// Every test set sacreBLEU knows, and the document annotations `--subset` selects on.
#[derive(Debug, Deserialize)]
pub struct Catalogue {
    pub sacrebleu_version: String,
    pub datasets: Vec<Dataset>,
    /// Test set -> document id -> `COUNTRY-domain[-COUNTRY]` (sacreBLEU's SUBSETS).
    #[serde(default)]
    pub subsets: BTreeMap<String, BTreeMap<String, String>>,
}

/// How a test set's raw files are laid out, which decides how they become plain text.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// WMT's SGML-like `.sgm` files before 2021, source and references in separate files.
    FakeSgml,
    /// As `FakeSgml`, but files not ending in `.sgm` are plain text.
    WmtAddition,
    /// IWSLT's XML, read as `FakeSgml`.
    IwsltXml,
    /// Aligned plain-text files.
    PlainText,
    /// Columns of tab-separated files (MTNT).
    Tsv,
    /// WMT 2021+ XML: source, references, systems and document metadata in one file.
    WmtXml,
}

/// One test set.
#[derive(Debug, Deserialize)]
pub struct Dataset {
    pub name: String,
    pub kind: Kind,
    /// The URLs to download, in order.
    pub data: Vec<String>,
    /// The MD5 sum of each download, where known.
    pub md5: Option<Vec<String>>,
    pub description: String,
    pub citation: Option<String>,
    /// Language pairs in sacreBLEU's order, with their files.
    pub langpairs: Vec<(String, PairFiles)>,
    /// WMT XML: the translators whose references are scored (sacreBLEU's `refs=`).
    pub refs: Option<Vec<String>>,
}

/// The files of a language pair: paths under the download directory (source first, then the
/// references), or for WMT 2022 XML one path and the translators to score.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PairFiles {
    Files(Vec<String>),
    Xml {
        path: String,
        #[serde(default)]
        refs: Option<Vec<String>>,
    },
}

impl PairFiles {
    /// The first (or only) file: the source, or the XML file holding everything.
    pub fn first(&self) -> Option<&str> {
        match self {
            PairFiles::Files(f) => f.first().map(String::as_str),
            PairFiles::Xml { path, .. } => Some(path),
        }
    }
}

impl Catalogue {
    /// sacreBLEU 2.6.0's catalogue, built into the binary.
    pub fn builtin() -> Result<Catalogue, Error> {
        Catalogue::from_json(BUILTIN)
    }

    /// A catalogue in the same JSON form (tests use their own, served from 127.0.0.1).
    pub fn from_json(text: &str) -> Result<Catalogue, Error> {
        serde_json::from_str(text).map_err(|e| Error::Catalogue(e.to_string()))
    }

    /// The test set called `name`.
    pub fn get(&self, name: &str) -> Result<&Dataset, Error> {
        self.datasets
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| Error::UnknownTestSet(name.to_string()))
    }

    /// Names, newest first as sacreBLEU sorts them (reverse alphabetical).
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.datasets.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        names
    }

    /// The test sets with `src-tgt` or `tgt-src` among their pairs, in catalogue order.
    pub fn for_pair(&self, pair: &str) -> Vec<&Dataset> {
        let reversed = match pair.split_once('-') {
            Some((s, t)) => format!("{t}-{s}"),
            None => pair.to_string(),
        };
        self.datasets
            .iter()
            .filter(|d| d.pair(pair).is_some() || d.pair(&reversed).is_some())
            .collect()
    }
}

impl Dataset {
    /// The files of a language pair, if the set has it.
    pub fn pair(&self, pair: &str) -> Option<&PairFiles> {
        self.langpairs
            .iter()
            .find(|(p, _)| p == pair)
            .map(|(_, files)| files)
    }

    /// The files of a language pair, or an error listing the pairs there are.
    pub fn pair_files(&self, pair: &str) -> Result<&PairFiles, Error> {
        self.pair(pair).ok_or_else(|| Error::UnknownPair {
            set: self.name.clone(),
            pair: pair.to_string(),
            available: self.pair_names().join(", "),
        })
    }

    /// The language pairs, in sacreBLEU's order.
    pub fn pair_names(&self) -> Vec<&str> {
        self.langpairs.iter().map(|(p, _)| p.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalogue_holds_sacrebleus_test_sets() {
        let c = Catalogue::builtin().unwrap();
        assert_eq!(c.sacrebleu_version, "2.6.0");
        assert_eq!(c.datasets.len(), 67);
        let wmt14 = c.get("wmt14").unwrap();
        assert_eq!(wmt14.kind, Kind::FakeSgml);
        assert_eq!(wmt14.data, ["https://statmt.org/wmt14/test-filtered.tgz"]);
        match wmt14.pair("en-de").unwrap() {
            PairFiles::Files(f) => assert_eq!(
                f,
                &[
                    "test/newstest2014-deen-src.en.sgm",
                    "test/newstest2014-deen-ref.de.sgm"
                ]
            ),
            other => panic!("{other:?}"),
        }
        let wmt22 = c.get("wmt22").unwrap();
        assert!(
            matches!(wmt22.pair("cs-en"), Some(PairFiles::Xml { refs: Some(r), .. }) if r == &["B"])
        );
        assert_eq!(wmt22.refs.as_deref(), Some(&["A".to_string()][..]));
        assert_eq!(c.names()[0], "wmt24");
        assert!(c.subsets["wmt19"].contains_key("bbc.381790"));
        assert!(matches!(c.get("wmt99"), Err(Error::UnknownTestSet(_))));
        let err = wmt14.pair_files("xx-yy").unwrap_err().to_string();
        assert!(err.contains("en-de") && err.contains("xx-yy"), "{err}");
        assert!(c.for_pair("de-en").iter().any(|d| d.name == "wmt14"));
    }
}
