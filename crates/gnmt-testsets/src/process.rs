//! From a test set's raw files to sacreBLEU's plain-text fields (`src`, `ref`, `ref:A`, `docid`,
//! ...), line for line and byte for byte as sacreBLEU 2.6.0 writes them, so that the text files
//! either tool leaves in the cache are the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gnmt_bleu::text::{collapse_ws, py_rstrip};

use crate::catalogue::{Dataset, Kind, PairFiles};
use crate::Error;

/// Named columns of equal length, in sacreBLEU's field order.
pub type Fields = Vec<(String, Vec<String>)>;

/// The field names of a pair whose layout is known without reading the raw files (every kind
/// but WMT XML, whose fields come from the file).
pub fn static_fieldnames(set: &Dataset, files: &[String]) -> Vec<String> {
    match set.kind {
        Kind::FakeSgml | Kind::WmtAddition | Kind::IwsltXml => {
            let mut fields = vec!["src".to_string()];
            if files.len() == 2 {
                fields.push("ref".into());
            } else {
                fields.extend((0..files.len().saturating_sub(1)).map(|i| format!("ref:{i}")));
            }
            if !set.name.starts_with("wmt08") {
                fields.extend(["docid", "genre", "origlang"].map(String::from));
            }
            fields
        }
        Kind::PlainText | Kind::Tsv | Kind::WmtXml => vec!["src".into(), "ref".into()],
    }
}

/// Reads the raw files of one pair (under `raw`) into its fields.
pub fn fields(set: &Dataset, files: &PairFiles, raw: &Path) -> Result<Fields, Error> {
    let paths = match files {
        PairFiles::Xml { path, .. } => return wmt_xml(&raw.join(path)),
        PairFiles::Files(f) if set.kind == Kind::WmtXml => match f.first() {
            Some(path) => return wmt_xml(&raw.join(path)),
            None => return Err(Error::catalogue(set, "a pair without files")),
        },
        PairFiles::Files(f) => f,
    };
    let names = static_fieldnames(set, paths);
    let mut out = Fields::new();
    for (i, name) in names.into_iter().enumerate() {
        let lines = match set.kind {
            Kind::PlainText => plain(&raw_file(set, raw, paths, i)?)?,
            Kind::Tsv => tsv(set, raw, paths, i, &name)?,
            _ if is_text_field(&name) => {
                let path = raw_file(set, raw, paths, i)?;
                if set.kind == Kind::WmtAddition && !path.to_string_lossy().ends_with(".sgm") {
                    plain(&path)?
                } else {
                    sgml_segments(&path)?
                }
            }
            // docid, genre, origlang: from the source file's document tags.
            _ => sgml_meta(&raw_file(set, raw, paths, 0)?, &name)?,
        };
        out.push((name, lines));
    }
    Ok(out)
}

fn is_text_field(name: &str) -> bool {
    name.starts_with("src") || name.starts_with("ref")
}

fn raw_file(set: &Dataset, raw: &Path, files: &[String], i: usize) -> Result<PathBuf, Error> {
    files
        .get(i)
        .map(|f| raw.join(f))
        .ok_or_else(|| Error::catalogue(set, "fewer files than fields"))
}

fn read(path: &Path) -> Result<Vec<String>, Error> {
    gnmt_io::text::read_lines(path).map_err(Error::Text)
}

/// Plain text: each line without its trailing whitespace.
fn plain(path: &Path) -> Result<Vec<String>, Error> {
    Ok(read(path)?
        .iter()
        .map(|l| py_rstrip(l).to_string())
        .collect())
}

/// A column of a tab-separated file: `N:FILE` names column N, a bare file name column 0 for
/// the source and 1 for the reference.
fn tsv(
    set: &Dataset,
    raw: &Path,
    files: &[String],
    i: usize,
    field: &str,
) -> Result<Vec<String>, Error> {
    let meta = files
        .get(i)
        .ok_or_else(|| Error::catalogue(set, "fewer files than fields"))?;
    let (column, file) = match meta.split_once(':') {
        Some((n, f)) => (
            n.parse::<usize>()
                .map_err(|_| Error::catalogue(set, &format!("bad TSV column {meta:?}")))?,
            f,
        ),
        None => (usize::from(field != "src"), meta.as_str()),
    };
    let path = raw.join(file);
    read(&path)?
        .iter()
        .enumerate()
        .map(|(n, line)| {
            line.trim_end_matches('\n')
                .split('\t')
                .nth(column)
                .map(str::to_string)
                .ok_or_else(|| Error::Format {
                    path: path.clone(),
                    message: format!("line {}: no column {column}", n + 1),
                })
        })
        .collect()
}

/// The `<seg ...>text</seg>` lines of WMT's SGML: the text between the first `>` and the last
/// `</seg>` (and whatever follows it), whitespace collapsed.
fn sgml_segments(path: &Path) -> Result<Vec<String>, Error> {
    Ok(read(path)?
        .iter()
        .filter(|l| l.starts_with("<seg "))
        .map(|l| collapse_ws(&unwrap_seg(l)))
        .collect())
}

/// sacreBLEU's `re.sub(r"<seg.*?>(.*)</seg>.*?", r"\1", line)` on a line starting with `<seg `.
fn unwrap_seg(line: &str) -> String {
    let Some(close) = line.rfind("</seg>") else {
        return line.to_string();
    };
    match line[4..close].find('>') {
        Some(gt) => format!("{}{}", &line[4 + gt + 1..close], &line[close + 6..]),
        None => line.to_string(),
    }
}

/// A document attribute (`docid`, `genre`, `origlang`) repeated for each of its segments; a
/// document without it keeps the previous document's value, as in sacreBLEU.
fn sgml_meta(path: &Path, field: &str) -> Result<Vec<String>, Error> {
    let mut value = String::new();
    let mut out = Vec::new();
    for line in read(path)? {
        if line.starts_with("<doc ") {
            if let Some(v) = attribute(&line, field) {
                value = v.to_string();
            }
        } else if line.starts_with("<seg ") {
            out.push(value.clone());
        }
    }
    Ok(out)
}

/// `re.search(f'{name}="(.*?)"', line)`.
pub(crate) fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = line.find(&key)? + key.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// One segment of a WMT XML document, as the fields need it.
struct XmlDoc<'a> {
    id: &'a str,
    origlang: &'a str,
    domain: Option<&'a str>,
    src: BTreeMap<i64, String>,
    /// Translator (`None`: no translator attribute) -> segment id -> text.
    refs: BTreeMap<Option<&'a str>, BTreeMap<i64, String>>,
    /// System -> segment id -> text, in the order the systems come.
    hyps: Vec<(&'a str, BTreeMap<i64, String>)>,
}

/// The field of a translator's references: `ref`, or `ref:NAME`.
pub fn ref_field(translator: Option<&str>) -> String {
    match translator {
        None | Some("") => "ref".into(),
        Some(t) => format!("ref:{t}"),
    }
}

/// WMT 2021+ XML: every segment with a reference, its source, each translator's reference (the
/// translators sorted: sacreBLEU's order is that of a Python set, which changes from run to
/// run), document id, original language, each system's output, and the domain where the file
/// has one.
fn wmt_xml(path: &Path) -> Result<Fields, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let tree =
        roxmltree::Document::parse_with_options(&text, options).map_err(|e| bad(e.to_string()))?;
    let root = tree.root_element();
    check_languages(root).map_err(bad)?;
    let translators: BTreeSet<Option<&str>> = descendants(root, "ref")
        .map(|r| r.attribute("translator"))
        .collect();
    let docs = descendants(root, "doc")
        .filter(|d| d.attribute("testsuite").is_none())
        .map(|d| xml_doc(d).map_err(&bad))
        .collect::<Result<Vec<_>, _>>()?;
    let mut src = Vec::new();
    let mut refs: Vec<Vec<String>> = vec![Vec::new(); translators.len()];
    let (mut docids, mut origlangs, mut domains) = (Vec::new(), Vec::new(), Vec::new());
    let mut systems: Vec<(String, Vec<String>)> = Vec::new();
    let mut seen_domain = false;
    for doc in &docs {
        for (id, text) in &doc.src {
            let has_ref = doc
                .refs
                .values()
                .any(|r| r.get(id).is_some_and(|t| !t.is_empty()));
            if !has_ref {
                continue;
            }
            // A translator without this segment gives an empty reference, as in sacreBLEU.
            for (column, t) in refs.iter_mut().zip(&translators) {
                let text = doc
                    .refs
                    .get(t)
                    .and_then(|r| r.get(id))
                    .cloned()
                    .unwrap_or_default();
                column.push(text);
            }
            src.push(text.clone());
            for (system, sents) in &doc.hyps {
                let hyp = sents.get(id).ok_or_else(|| {
                    bad(format!(
                        "document {}: system {system} has no segment {id}",
                        doc.id
                    ))
                })?;
                match systems.iter_mut().find(|(s, _)| s == system) {
                    Some((_, col)) => col.push(hyp.clone()),
                    None => systems.push((system.to_string(), vec![hyp.clone()])),
                }
            }
            docids.push(doc.id.to_string());
            origlangs.push(doc.origlang.to_string());
            domains.push(doc.domain.unwrap_or("None").to_string());
            seen_domain = doc.domain.is_some();
        }
    }
    let mut fields: Fields = vec![("src".into(), src)];
    fields.extend(translators.iter().map(|t| ref_field(*t)).zip(refs));
    fields.push(("docid".into(), docids));
    fields.push(("origlang".into(), origlangs));
    fields.extend(systems);
    if seen_domain {
        fields.push(("domain".into(), domains));
    }
    for (_, lines) in &mut fields {
        for l in lines.iter_mut() {
            *l = collapse_ws(l);
        }
    }
    Ok(fields)
}

fn descendants<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.descendants()
        .skip(1)
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// One source and one reference language in the whole file, as sacreBLEU asserts.
fn check_languages(root: roxmltree::Node) -> Result<(), String> {
    for kind in ["src", "ref"] {
        let langs: BTreeSet<Option<&str>> = descendants(root, kind)
            .map(|n| n.attribute("lang"))
            .collect();
        if langs.len() != 1 {
            return Err(format!(
                "{} {kind} languages in the file, expected one",
                langs.len()
            ));
        }
    }
    Ok(())
}

fn xml_doc<'a>(doc: roxmltree::Node<'a, '_>) -> Result<XmlDoc<'a>, String> {
    let id = doc.attribute("id").ok_or("a <doc> without an id")?;
    let origlang = doc
        .attribute("origlang")
        .ok_or_else(|| format!("document {id} has no origlang"))?;
    let mut src = BTreeMap::new();
    for s in descendants(doc, "src") {
        src.extend(segments(s)?);
    }
    let mut refs = BTreeMap::new();
    for r in descendants(doc, "ref") {
        refs.insert(r.attribute("translator"), segments(r)?);
    }
    let mut hyps: Vec<(&str, BTreeMap<i64, String>)> = Vec::new();
    for h in descendants(doc, "hyp") {
        let system = h.attribute("system").unwrap_or("None");
        let sents = segments(h)?;
        match hyps.iter_mut().find(|(s, _)| *s == system) {
            Some(entry) => entry.1 = sents,
            None => hyps.push((system, sents)),
        }
    }
    Ok(XmlDoc {
        id,
        origlang,
        domain: doc.attribute("domain"),
        src,
        refs,
        hyps,
    })
}

/// Segment id -> the text before the segment's first child (lxml's `.text`), "" when none.
fn segments(node: roxmltree::Node) -> Result<BTreeMap<i64, String>, String> {
    descendants(node, "seg")
        .map(|seg| {
            let id = seg.attribute("id").unwrap_or("");
            let id: i64 = id
                .trim()
                .parse()
                .map_err(|_| format!("a <seg> with id {id:?}, not a number"))?;
            let text = seg
                .first_child()
                .filter(|c| c.is_text())
                .and_then(|c| c.text())
                .unwrap_or("");
            Ok((id, text.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seg_lines_unwrap_as_sacrebleus_regex_does() {
        assert_eq!(
            unwrap_seg("<seg id=\"1\">Hello  world</seg>"),
            "Hello  world"
        );
        assert_eq!(unwrap_seg("<seg id=\"1\">a</seg> tail"), "a tail");
        assert_eq!(unwrap_seg("<seg id=1>a</seg>b</seg>c"), "a</seg>bc");
        assert_eq!(unwrap_seg("<seg id=1>no close"), "<seg id=1>no close");
        assert_eq!(unwrap_seg("<seg </seg>"), "<seg </seg>");
        assert_eq!(unwrap_seg("<seg id=1></seg>"), "");
    }

    #[test]
    fn attributes_are_found_as_by_re_search() {
        let line = r#"<doc sysid="ref" docid="abc.1" genre="news" origlang="de">"#;
        assert_eq!(attribute(line, "docid"), Some("abc.1"));
        assert_eq!(attribute(line, "origlang"), Some("de"));
        assert_eq!(attribute(line, "domain"), None);
        assert_eq!(attribute(r#"<doc docid="x"#, "docid"), None);
    }
}
