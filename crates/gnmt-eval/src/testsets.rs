//! sacreBLEU's test-set options: `-t NAME[,NAME] -l SRC-TGT` as the references, `--echo`,
//! `--list`, `--download`, `--citation`, `--origlang`/`--subset`.

use anyhow::{bail, Context, Result};
use gnmt_testsets::{Documents, Subset, TestSets};

use crate::EvalArgs;

/// The test sets named by `-t` with their pair, checked as sacreBLEU checks them.
pub struct Chosen {
    pub sets: TestSets,
    pub names: Vec<String>,
    pub pair: String,
}

/// `-t` and `-l`, or nothing when `-t` is absent.
pub fn chosen(a: &EvalArgs) -> Result<Option<Chosen>> {
    let Some(list) = &a.test_set else {
        return Ok(None);
    };
    let sets = TestSets::from_env()?;
    let names: Vec<String> = list.split(',').map(str::to_string).collect();
    for n in &names {
        sets.catalogue.get(n)?;
    }
    if !a.refs.is_empty() {
        bail!("give either a test set (-t) or reference files, not both");
    }
    let Some(pair) = a.langpair.clone() else {
        bail!("-t needs a language pair (-l); `gnmt eval --list -t {list}` lists them");
    };
    for n in &names {
        sets.catalogue.get(n)?.pair_files(&pair)?;
    }
    Ok(Some(Chosen { sets, names, pair }))
}

impl Chosen {
    /// One stream per reference, the test sets' references concatenated in order.
    pub fn references(&self) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let mut names = Vec::new();
        let mut refs: Vec<Vec<String>> = Vec::new();
        for set in &self.names {
            let data = self.sets.pair(set, &self.pair)?;
            let files = data.references();
            if files.is_empty() {
                tracing::warn!("no references found for test set {set}/{}", self.pair);
            }
            for (k, path) in files.into_iter().enumerate() {
                let lines = crate::read_text_lines(path)?;
                if refs.len() <= k {
                    refs.push(Vec::new());
                    names.push(path.display().to_string());
                }
                refs[k].extend(lines);
            }
        }
        if refs.is_empty() {
            refs.push(Vec::new());
            names.push(format!("{}/{}", self.names.join(","), self.pair));
        }
        Ok((names, refs))
    }

    /// The documents of each test set, read once for any number of filters.
    pub fn documents(&self) -> Result<Vec<Documents>> {
        let docs = self
            .names
            .iter()
            .map(|set| self.sets.documents(set, &self.pair));
        Ok(docs.collect::<Result<_, _>>()?)
    }

    /// `--origlang`/`--subset`: which segments of the concatenated test sets to keep.
    pub fn mask(&self, subset: &Subset) -> Result<Vec<bool>> {
        mask(&self.documents()?, subset)
    }

    /// `--echo FIELD...`: the fields of each test set, tab-separated.
    pub fn echo(&self, fields: &[String], subset: &Subset) -> Result<()> {
        let mut out = String::new();
        for set in &self.names {
            let data = self.sets.pair(set, &self.pair)?;
            let mut lines = data.echo(fields)?;
            if !subset.is_empty() {
                let keep = self.sets.subset_mask(set, &self.pair, subset)?;
                lines = filter(lines, &keep);
            }
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
        Ok(())
    }
}

/// Which segments of the concatenated test sets `subset` keeps.
fn mask(docs: &[Documents], subset: &Subset) -> Result<Vec<bool>> {
    let mut keep = Vec::new();
    for d in docs {
        keep.extend(d.mask(subset)?);
    }
    Ok(keep)
}

/// The sorted union of what `each` finds in each test set's documents.
fn union(docs: &[Documents], each: impl Fn(&Documents) -> Vec<String>) -> Vec<String> {
    let all: std::collections::BTreeSet<String> = docs.iter().flat_map(each).collect();
    all.into_iter().collect()
}

/// The items whose flag is set (as far as both go, as Python's `zip`).
pub fn filter<T>(items: Vec<T>, keep: &[bool]) -> Vec<T> {
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(item, &k)| k.then_some(item))
        .collect()
}

/// `--list`: the test sets (for a pair, with `-l`), or with `-t` the fields of its pairs.
pub fn list(a: &EvalArgs) -> Result<()> {
    let sets = TestSets::from_env()?;
    if let Some(name) = &a.test_set {
        let set = sets.catalogue.get(name)?;
        let pairs: Vec<String> = match &a.langpair {
            Some(p) => vec![p.clone()],
            None => set.pair_names().iter().map(|s| s.to_string()).collect(),
        };
        for p in pairs {
            say!("{p}: {}", sets.field_names(name, &p)?.join(", "));
        }
        return Ok(());
    }
    let mut chosen: Vec<&gnmt_testsets::Dataset> = match &a.langpair {
        Some(p) => {
            say!("The available test sets for {p} are:");
            sets.catalogue.for_pair(p)
        }
        None => {
            say!("The available test sets are:");
            sets.catalogue.datasets.iter().collect()
        }
    };
    chosen.sort_by(|x, y| x.name.cmp(&y.name));
    for d in chosen {
        say!(
            "{:<30}: {}",
            d.name,
            gnmt_bleu::text::py_strip(&d.description)
        );
    }
    Ok(())
}

/// `--download NAME`: fetches and converts a test set (one pair with `-l`) into the cache.
pub fn download(name: &str, pair: Option<&str>) -> Result<()> {
    let sets = TestSets::from_env()?;
    sets.download(name, pair)
        .with_context(|| format!("downloading test set {name}"))?;
    Ok(())
}

/// `--citation`: the BibTeX of each test set named by `-t`.
pub fn citation(a: &EvalArgs) -> Result<()> {
    let Some(list) = &a.test_set else {
        bail!("--citation needs a test set (-t)");
    };
    let sets = TestSets::from_env()?;
    for name in list.split(',') {
        match &sets.catalogue.get(name)?.citation {
            Some(c) => say!("{c}"),
            None => tracing::error!("no citation found for {name}"),
        }
    }
    Ok(())
}

/// `--detail`: the scores of each original language, over all domains and per domain (or
/// country), as sacreBLEU's `print_subset_results` prints them (`-ol XY` there means the
/// languages `X` and `Y`: sacreBLEU walks the string's characters, and so does this).
pub fn print_detail(
    test: Option<&Chosen>,
    a: &EvalArgs,
    metrics: &[gnmt_bleu::Metric],
    hyps: &[String],
    refs: &[Vec<String>],
) -> Result<()> {
    let docs = match test {
        Some(t) => t.documents()?,
        None => Vec::new(),
    };
    let origlangs: Vec<String> = match &a.origlang {
        Some(o) => o.chars().map(String::from).collect(),
        None => union(&docs, Documents::origlangs),
    };
    if test.is_none() || origlangs.is_empty() {
        say!("No subset information found. Consider using --origlang argument.");
        return Ok(());
    }
    let mut subsets: Vec<Option<String>> = vec![None];
    match &a.subset {
        Some(s) => subsets.push(Some(s.clone())),
        None => subsets.extend(union(&docs, Documents::subsets).into_iter().map(Some)),
    }
    let mut results: Vec<(String, Vec<(usize, gnmt_bleu::Score)>)> = Vec::new();
    for origlang in &origlangs {
        for subset in &subsets {
            let keep = mask(
                &docs,
                &Subset {
                    origlang: Some(origlang.clone()),
                    subset: subset.clone(),
                },
            )?;
            let seg = gnmt_bleu::Segments {
                hyps: filter(hyps.to_vec(), &keep),
                refs: refs.iter().map(|r| filter(r.clone(), &keep)).collect(),
            };
            if seg.hyps.is_empty() {
                continue;
            }
            let key = match subset.as_deref() {
                None => format!("origlang={origlang} domain=ALL"),
                Some(s) => match s.strip_prefix("country:") {
                    Some(c) => format!("origlang={origlang} country={c}"),
                    None => format!("origlang={origlang} domain={s}"),
                },
            };
            let scores = metrics
                .iter()
                .map(|m| Ok((seg.hyps.len(), m.corpus_score(&seg, false)?)))
                .collect::<Result<Vec<_>>>()?;
            match results.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.extend(scores),
                None => results.push((key, scores)),
            }
        }
    }
    let Some(first) = results.first() else {
        return Ok(());
    };
    let left = results
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let name_width = first
        .1
        .iter()
        .map(|(_, s)| s.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, scores) in &results {
        for (n, score) in scores {
            out.push_str(&format!(
                "{key:<left$}: sentences={n:<6} {:<name_width$} = {}\n",
                score.name,
                gnmt_bleu::text::fmt_fixed(score.score, a.width)
            ));
        }
    }
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
    Ok(())
}
