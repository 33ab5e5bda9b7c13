//! # gnmt-testsets
//!
//! sacreBLEU's test sets by name (`gnmt eval -t wmt14 -l en-de -i hyp.de`): its catalogue of test
//! sets (facts from sacreBLEU 2.6.0's definitions), its cache (`$SACREBLEU`, default
//! `~/.sacrebleu`, laid out as sacreBLEU lays it out, so a machine with sacreBLEU's downloads
//! works offline and what gnmt downloads sacreBLEU uses), downloads checked against their MD5
//! sums, and the raw files turned into the same plain-text fields sacreBLEU writes. Pure Rust:
//! the libtorch-free `gnmt eval` uses it.

mod cache;
mod catalogue;
mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gnmt_bleu::text::py_rstrip;

pub use cache::Cache;
pub use catalogue::{Catalogue, Dataset, Kind, PairFiles};

/// What can go wrong finding, fetching or reading a test set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown test set {0:?} (`gnmt eval --list` lists them)")]
    UnknownTestSet(String),
    #[error("no language pair {pair:?} in {set} (it has {available})")]
    UnknownPair {
        set: String,
        pair: String,
        available: String,
    },
    #[error("no field {field:?} in {set}/{pair} (it has {available})")]
    UnknownField {
        set: String,
        pair: String,
        field: String,
        available: String,
    },
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("downloading {url}: MD5 sum {got}, expected {expected}: the download was discarded; if this persists, the file on the server has changed")]
    Checksum {
        url: String,
        got: String,
        expected: String,
    },
    #[error("unpacking {}: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Text(gnmt_io::text::TextError),
    #[error("test set catalogue: {0}")]
    Catalogue(String),
    #[error("{0}")]
    Filter(String),
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn catalogue(set: &Dataset, what: &str) -> Error {
        Error::Catalogue(format!("{}: {what}", set.name))
    }
}

/// The catalogue and the cache: what `-t NAME -l PAIR` needs.
#[derive(Debug)]
pub struct TestSets {
    pub catalogue: Catalogue,
    pub cache: Cache,
}

/// One language pair of one test set, its fields in the cache.
#[derive(Debug)]
pub struct PairData<'a> {
    pub set: &'a Dataset,
    pub pair: String,
    /// Field names and their text files, in sacreBLEU's order.
    pub fields: Vec<(String, PathBuf)>,
}

impl TestSets {
    /// sacreBLEU's catalogue over `$SACREBLEU` (default `~/.sacrebleu`).
    pub fn from_env() -> Result<TestSets, Error> {
        Ok(TestSets {
            catalogue: Catalogue::builtin()?,
            cache: Cache::from_env(),
        })
    }

    /// The field names of `set`/`pair`; WMT XML names them inside its file, which is
    /// downloaded for it.
    pub fn field_names(&self, set: &str, pair: &str) -> Result<Vec<String>, Error> {
        let dataset = self.catalogue.get(set)?;
        match known_field_names(dataset, dataset.pair_files(pair)?) {
            Some(names) => Ok(names),
            None => Ok(self
                .pair(set, pair)?
                .field_names()
                .iter()
                .map(|s| s.to_string())
                .collect()),
        }
    }

    /// The fields of `set`/`pair`, downloaded and converted to text first where the cache lacks
    /// any of them.
    pub fn pair<'a>(&'a self, set: &str, pair: &str) -> Result<PairData<'a>, Error> {
        let set = self.catalogue.get(set)?;
        let files = set.pair_files(pair)?;
        let names = known_field_names(set, files);
        let paths = |names: &[String]| -> Vec<(String, PathBuf)> {
            names
                .iter()
                .map(|n| (n.clone(), self.cache.text_path(set, pair, n)))
                .collect()
        };
        if let Some(names) = &names {
            let fields = paths(names);
            if fields.iter().all(|(_, p)| p.exists()) {
                return Ok(PairData {
                    set,
                    pair: pair.into(),
                    fields,
                });
            }
        }
        // WMT XML names its fields inside the file: read it whenever it is asked for.
        self.cache.ensure_downloaded(set)?;
        let data = process::fields(set, files, &self.cache.raw_dir(set))?;
        for (name, lines) in &data {
            let path = self.cache.text_path(set, pair, name);
            let keep = set.kind == Kind::WmtXml && path.metadata().is_ok_and(|m| m.len() > 0);
            if !keep {
                write_lines(&path, lines)?;
            }
        }
        let names: Vec<String> = data.into_iter().map(|(n, _)| n).collect();
        Ok(PairData {
            set,
            pair: pair.into(),
            fields: paths(&names),
        })
    }

    /// Downloads and converts every pair of a test set, or one.
    pub fn download(&self, set: &str, pair: Option<&str>) -> Result<(), Error> {
        let dataset = self.catalogue.get(set)?;
        let pairs: Vec<&str> = match pair {
            Some(p) => vec![p],
            None => dataset.pair_names(),
        };
        for p in pairs {
            self.pair(set, p)?;
        }
        Ok(())
    }
}

/// `--origlang` and `--subset`: which segments of a test set to keep.
#[derive(Debug, Default, Clone)]
pub struct Subset {
    /// Keep documents first written in this language (`non-XX`: in any other).
    pub origlang: Option<String>,
    /// Keep documents whose domain (WMT XML) or annotation (sacreBLEU's subsets of WMT18/19
    /// SGML; `country:XX` for the country) matches this regular expression.
    pub subset: Option<String>,
}

impl Subset {
    pub fn is_empty(&self) -> bool {
        self.origlang.is_none() && self.subset.is_none()
    }

    fn origlang_keeps(&self, doc: &str) -> bool {
        match self.origlang.as_deref() {
            None => true,
            Some(o) => match o.strip_prefix("non-") {
                Some(not) => doc != not,
                None => doc == o,
            },
        }
    }
}

/// Per segment of one pair, what sacreBLEU's `--origlang` and `--subset` read in the raw
/// files: its document's original language, and its domain (WMT XML) or document id (WMT SGML,
/// looked up in sacreBLEU's annotations of the set). Read once, filtered as often as needed.
#[derive(Debug, Clone)]
pub struct Documents {
    set: String,
    origlang: Vec<String>,
    tags: Tags,
}

#[derive(Debug, Clone)]
enum Tags {
    /// WMT XML: each segment's domain, where the file has domains.
    Domains(Option<Vec<String>>),
    /// WMT SGML: each segment's document id, and the set's annotations (id -> country-domain).
    DocIds {
        ids: Vec<String>,
        annotations: Option<BTreeMap<String, String>>,
    },
    /// Neither: no documents to filter on (the source file named).
    Unknown(String),
}

impl TestSets {
    /// The documents of `set`/`pair` (none where its raw files are neither WMT XML nor SGML).
    pub fn documents(&self, set: &str, pair: &str) -> Result<Documents, Error> {
        let dataset = self.catalogue.get(set)?;
        let files = dataset.pair_files(pair)?;
        self.cache.ensure_downloaded(dataset)?;
        let raw = self.cache.raw_dir(dataset);
        if dataset.kind == Kind::WmtXml {
            let mut fields = process::fields(dataset, files, &raw)?;
            let mut take = |name: &str| {
                fields
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|i| fields.swap_remove(i).1)
            };
            // Every WMT XML conversion has an origlang column; a domain column only where the
            // documents have domains.
            let origlang = take("origlang").ok_or_else(|| Error::Format {
                path: raw.clone(),
                message: "no origlang field".into(),
            })?;
            let tags = Tags::Domains(take("domain"));
            return Ok(Documents {
                set: set.to_string(),
                origlang,
                tags,
            });
        }
        let first = files.first().unwrap_or("");
        if !first.ends_with(".sgm") {
            return Ok(Documents {
                set: set.to_string(),
                origlang: Vec::new(),
                tags: Tags::Unknown(first.to_string()),
            });
        }
        let (mut origlang, mut ids) = (Vec::new(), Vec::new());
        let (mut doc_origlang, mut doc_id) = (String::new(), String::new());
        for line in read_text(&raw.join(first))? {
            if line.starts_with("<doc ") {
                // Without the attribute, sacreBLEU's re.sub leaves the whole line (newline and
                // all): it never equals a language.
                doc_origlang = match last_attribute(&line, "origlang") {
                    Some(o) => o.to_string(),
                    None => format!("{line}\n"),
                };
                doc_id = last_attribute(&line, "docid").unwrap_or(&line).to_string();
            } else if line.starts_with("<seg ") {
                origlang.push(doc_origlang.clone());
                ids.push(doc_id.clone());
            }
        }
        Ok(Documents {
            set: set.to_string(),
            origlang,
            tags: Tags::DocIds {
                ids,
                annotations: self.catalogue.subsets.get(set).cloned(),
            },
        })
    }

    /// One flag per segment of `set`/`pair`: whether `subset` keeps it (sacreBLEU's
    /// `filter_subset`).
    pub fn subset_mask(&self, set: &str, pair: &str, subset: &Subset) -> Result<Vec<bool>, Error> {
        self.documents(set, pair)?.mask(subset)
    }
}

impl Documents {
    /// Whether `subset` keeps each segment.
    pub fn mask(&self, subset: &Subset) -> Result<Vec<bool>, Error> {
        if let Tags::Unknown(file) = &self.tags {
            return Err(Error::Filter(format!(
                "--origlang and --subset need WMT's XML or SGML files, and {} has {file:?}",
                self.set
            )));
        }
        let pattern = match subset.subset.as_deref() {
            Some(s) => {
                let s = s.strip_prefix("country:").unwrap_or(s);
                Some(
                    regex::Regex::new(s)
                        .map_err(|e| Error::Filter(format!("--subset {s:?}: {e}")))?,
                )
            }
            None => None,
        };
        if let (
            Some(_),
            Tags::DocIds {
                annotations: None, ..
            },
        ) = (&pattern, &self.tags)
        {
            return Err(Error::Filter(format!(
                "no subset annotation for test set {}",
                self.set
            )));
        }
        let tag = |i: usize| match &self.tags {
            Tags::Domains(domains) => domains.as_ref().and_then(|d| d.get(i)).map(String::as_str),
            Tags::Unknown(_) => None,
            Tags::DocIds { ids, annotations } => Some(
                ids.get(i)
                    .and_then(|id| annotations.as_ref()?.get(id))
                    .map_or("", String::as_str),
            ),
        };
        Ok(self
            .origlang
            .iter()
            .enumerate()
            .map(|(i, o)| {
                subset.origlang_keeps(o)
                    && pattern
                        .as_ref()
                        .is_none_or(|re| tag(i).is_some_and(|t| re.is_match(t)))
            })
            .collect())
    }

    /// The original languages of the documents, sorted (for `--detail`).
    pub fn origlangs(&self) -> Vec<String> {
        let found: BTreeSet<&String> = self.origlang.iter().collect();
        found.into_iter().cloned().collect()
    }

    /// The domains of the documents (WMT XML), or the countries (`country:XX`) and domains of
    /// sacreBLEU's annotations of the set (WMT18/19 SGML), sorted (for `--detail`).
    pub fn subsets(&self) -> Vec<String> {
        let mut found = BTreeSet::new();
        match &self.tags {
            Tags::Domains(domains) => found.extend(domains.iter().flatten().cloned()),
            Tags::DocIds { annotations, .. } => {
                for tag in annotations.iter().flat_map(BTreeMap::values) {
                    let mut parts = tag.split('-');
                    found.insert(format!("country:{}", parts.next().unwrap_or("")));
                    found.insert(parts.next().unwrap_or("").to_string());
                }
            }
            Tags::Unknown(_) => {}
        }
        found.into_iter().collect()
    }
}

/// The field names of a pair, where they are known without reading its raw files (every
/// format but WMT XML, which names them inside the file).
fn known_field_names(set: &Dataset, files: &PairFiles) -> Option<Vec<String>> {
    match (set.kind, files) {
        (Kind::WmtXml, _) | (_, PairFiles::Xml { .. }) => None,
        (_, PairFiles::Files(f)) => Some(process::static_fieldnames(set, f)),
    }
}

/// `re.sub(r'.* NAME="([^"]+)".*\n', r'\1', line)` when it matches: the last ` NAME="..."`
/// with a non-empty value.
fn last_attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    line.rmatch_indices(key.as_str()).find_map(|(at, _)| {
        let start = at + key.len();
        let len = line[start..].find('"')?;
        (len > 0).then(|| &line[start..start + len])
    })
}

impl PairData<'_> {
    pub fn field_names(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The source text file.
    pub fn source(&self) -> Result<&Path, Error> {
        self.field("src")
    }

    /// The reference files scored: for WMT XML the translators the catalogue names (per pair,
    /// else per test set), otherwise every `ref` field.
    pub fn references(&self) -> Vec<&Path> {
        let allowed: Option<Vec<String>> = if self.set.kind == Kind::WmtXml {
            let per_pair = match self.set.pair(&self.pair) {
                Some(PairFiles::Xml { refs: Some(r), .. }) => Some(r),
                _ => None,
            };
            let refs = per_pair.or(self.set.refs.as_ref());
            Some(
                refs.map(|r| r.iter().map(|t| process::ref_field(Some(t))).collect())
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        self.fields
            .iter()
            .filter(|(n, _)| match &allowed {
                Some(a) => a.contains(n),
                None => n.starts_with("ref"),
            })
            .map(|(_, p)| p.as_path())
            .collect()
    }

    /// The file of a field. `ref` where the set has only named references (`ref:A`, ...) means
    /// the first of them, as in sacreBLEU.
    pub fn field(&self, name: &str) -> Result<&Path, Error> {
        let name = if name == "ref" && !self.fields.iter().any(|(n, _)| n == "ref") {
            self.fields
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| n.starts_with("ref"))
                .min()
                .unwrap_or(name)
        } else {
            name
        };
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
            .ok_or_else(|| Error::UnknownField {
                set: self.set.name.clone(),
                pair: self.pair.clone(),
                field: name.to_string(),
                available: self.field_names().join(", "),
            })
    }

    /// `--echo FIELD...`: the fields side by side, tab-separated, each line right-stripped.
    /// `all` is every field.
    pub fn echo(&self, fields: &[String]) -> Result<Vec<String>, Error> {
        let names: Vec<String> = if fields.iter().any(|f| f == "all") {
            if fields.len() != 1 {
                return Err(Error::Filter("--echo all goes alone".into()));
            }
            self.field_names().iter().map(|s| s.to_string()).collect()
        } else {
            fields.to_vec()
        };
        let columns = names
            .iter()
            .map(|n| read_text(self.field(n)?))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = columns.iter().map(Vec::len).min().unwrap_or(0);
        Ok((0..rows)
            .map(|i| {
                columns
                    .iter()
                    .map(|c| py_rstrip(&c[i]))
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .collect())
    }
}

/// The lines of a cached text file, as sacreBLEU reads them (right-stripped by the caller).
pub fn read_text(path: &Path) -> Result<Vec<String>, Error> {
    gnmt_io::text::read_lines(path).map_err(Error::Text)
}

fn write_lines(path: &Path, lines: &[String]) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    gnmt_io::write_file(path, text).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests;
