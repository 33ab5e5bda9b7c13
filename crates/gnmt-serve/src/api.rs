//! The JSON of `POST /v1/translate`: the request as a client sends it, checked against the
//! server's limits field by field, and the response.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/translate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateRequest {
    pub text: Text,
    pub beam: Option<usize>,
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    /// Translations wanted per sentence, best first (at most `beam`).
    pub nbest: Option<usize>,
    /// Per output piece, the source piece it attends to most.
    #[serde(default)]
    pub alignments: bool,
}

/// One sentence, or several.
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    One(String),
    Many(Vec<String>),
}

impl Text {
    pub fn into_sentences(self) -> Vec<String> {
        match self {
            Text::One(s) => vec![s],
            Text::Many(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(Text::Many(v))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// What the server allows a request to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLimits {
    /// Sentences in one request.
    pub max_sentences: usize,
    pub max_beam: usize,
}

/// Search settings a request asked for (defaults filled in): requests with equal settings are
/// batched together.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub beam: usize,
    pub alpha: f64,
    pub beta: f64,
    pub nbest: usize,
}

impl PartialEq for Settings {
    fn eq(&self, o: &Self) -> bool {
        // Bitwise: two requests batch together only when their scores are computed alike.
        self.beam == o.beam
            && self.alpha.to_bits() == o.alpha.to_bits()
            && self.beta.to_bits() == o.beta.to_bits()
            && self.nbest == o.nbest
    }
}

/// A request that cannot be served as sent: the HTTP status and a message naming the field.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
}

fn bad(message: String) -> Rejection {
    Rejection {
        status: 400,
        message,
    }
}

/// A checked request: its sentences and settings.
#[derive(Debug)]
pub struct Checked {
    pub sentences: Vec<String>,
    pub settings: Settings,
    pub alignments: bool,
}

/// Parses and checks a request body: UTF-8, JSON, field types, values within `limits`;
/// `defaults` fills what the request leaves out.
pub fn parse(
    body: &[u8],
    defaults: Settings,
    limits: &RequestLimits,
) -> Result<Checked, Rejection> {
    let text = std::str::from_utf8(body).map_err(|e| {
        bad(format!(
            "the body is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let de = &mut serde_json::Deserializer::from_str(text);
    let req: TranslateRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if matches!(path.as_str(), "." | "?" | "") {
            bad(format!("invalid JSON: {inner}"))
        } else {
            bad(format!("field `{path}`: {inner}"))
        }
    })?;
    let settings = settings(&req, defaults, limits)?;
    let sentences = match req.text {
        Text::One(s) if s.trim().is_empty() => {
            return Err(bad("field `text`: empty".into()));
        }
        Text::Many(v) if v.is_empty() => {
            return Err(bad("field `text`: an empty array".into()));
        }
        t => t.into_sentences(),
    };
    if sentences.len() > limits.max_sentences {
        return Err(Rejection {
            status: 413,
            message: format!(
                "field `text`: {} sentences; this server takes at most {} per request",
                sentences.len(),
                limits.max_sentences
            ),
        });
    }
    Ok(Checked {
        sentences,
        settings,
        alignments: req.alignments,
    })
}

/// The request's search settings, each within the server's limits.
fn settings(
    req: &TranslateRequest,
    defaults: Settings,
    limits: &RequestLimits,
) -> Result<Settings, Rejection> {
    let beam = req.beam.unwrap_or(defaults.beam.min(limits.max_beam));
    if beam == 0 || beam > limits.max_beam {
        return Err(bad(format!(
            "field `beam`: {beam}; must be 1 to {}",
            limits.max_beam
        )));
    }
    let weight = |name: &str, v: Option<f64>, default: f64| match v {
        Some(x) if !(0.0..=10.0).contains(&x) => {
            Err(bad(format!("field `{name}`: {x}; must be 0 to 10")))
        }
        Some(x) => Ok(x),
        None => Ok(default),
    };
    let alpha = weight("alpha", req.alpha, defaults.alpha)?;
    let beta = weight("beta", req.beta, defaults.beta)?;
    let nbest = req.nbest.unwrap_or(1);
    if nbest == 0 || nbest > beam {
        return Err(bad(format!(
            "field `nbest`: {nbest}; must be 1 to the beam ({beam})"
        )));
    }
    Ok(Settings {
        beam,
        alpha,
        beta,
        nbest,
    })
}

/// One of the n best translations of a sentence.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scored {
    pub text: String,
    pub score: f64,
}

/// The answer of `POST /v1/translate`: one translation per sentence, in order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TranslateResponse {
    pub translations: Vec<String>,
    /// With `nbest` > 1: per sentence, the n best with their scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbest: Option<Vec<Vec<Scored>>>,
    /// With `alignments`: per sentence, per output piece, the source piece it attends to most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignments: Option<Vec<Vec<usize>>>,
    /// Sentences truncated to the model's length limit, and the like.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Settings = Settings {
        beam: 5,
        alpha: 0.6,
        beta: 0.1,
        nbest: 1,
    };
    const LIMITS: RequestLimits = RequestLimits {
        max_sentences: 4,
        max_beam: 8,
    };

    fn check(body: &str) -> Result<Checked, Rejection> {
        parse(body.as_bytes(), DEFAULTS, &LIMITS)
    }

    fn message(body: &str) -> String {
        check(body).unwrap_err().message
    }

    #[test]
    fn one_sentence_or_many_with_defaults_filled_in() {
        let c = check(r#"{"text": "a b"}"#).unwrap();
        assert_eq!(c.sentences, ["a b"]);
        assert_eq!(c.settings, DEFAULTS);
        let c = check(r#"{"text": ["x", "", "y"], "beam": 2, "nbest": 2, "alignments": true}"#)
            .unwrap();
        assert_eq!(c.sentences, ["x", "", "y"]);
        assert_eq!(
            (c.settings.beam, c.settings.nbest, c.alignments),
            (2, 2, true)
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        assert!(message("{").contains("invalid JSON"), "{}", message("{"));
        assert!(message("[1]").contains("invalid JSON") || message("[1]").contains("invalid type"));
        assert!(message(r#"{"text": 5}"#).contains("field `text`"));
        assert!(message(r#"{"text": ["a", 5]}"#).contains("field `text[1]`"));
        assert!(message(r#"{"text": "a", "beam": -1}"#).contains("field `beam`"));
        assert!(message(r#"{"text": "a", "beam": 0}"#).contains("field `beam`"));
        assert!(message(r#"{"text": "a", "beam": 99}"#).contains("1 to 8"));
        assert!(message(r#"{"text": "a", "alpha": "x"}"#).contains("field `alpha`"));
        assert!(message(r#"{"text": "a", "beta": 11}"#).contains("field `beta`"));
        assert!(message(r#"{"text": "a", "nbest": 6}"#).contains("field `nbest`"));
        assert!(message(r#"{"text": "a", "colour": 1}"#).contains("colour"));
        assert!(message(r#"{"beam": 2}"#).contains("text"));
        assert!(message(r#"{"text": ""}"#).contains("empty"));
        assert!(message(r#"{"text": []}"#).contains("empty"));
        let too_many = check(r#"{"text": ["a","b","c","d","e"]}"#).unwrap_err();
        assert_eq!(too_many.status, 413);
        let not_utf8 = parse(b"{\"text\": \"\xff\"}", DEFAULTS, &LIMITS).unwrap_err();
        assert_eq!(not_utf8.status, 400);
        assert!(not_utf8.message.contains("UTF-8"), "{}", not_utf8.message);
    }

    #[test]
    fn a_default_beam_above_the_limit_is_capped_not_refused() {
        let limits = RequestLimits {
            max_sentences: 4,
            max_beam: 3,
        };
        let c = parse(br#"{"text": "a"}"#, DEFAULTS, &limits).unwrap();
        assert_eq!(c.settings.beam, 3);
    }
}
