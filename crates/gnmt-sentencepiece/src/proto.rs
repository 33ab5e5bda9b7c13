//! The few fields of SentencePiece's `ModelProto` (sentencepiece_model.proto) that encoding
//! needs, read from the protobuf wire format by hand: pieces (text, score, type), the trainer's
//! model type and byte fallback, and the normalizer's precompiled character map and whitespace
//! options.

use crate::Error;

/// `ModelProto.SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_wire(v: u64) -> Result<PieceType, Error> {
        Ok(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            other => return Err(Error::Model(format!("unknown piece type {other}"))),
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceType,
}

/// `TrainerSpec.ModelType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

/// What encoding needs of a model file.
#[derive(Debug, Clone)]
pub struct ModelProto {
    pub pieces: Vec<Piece>,
    pub model_type: ModelType,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

/// A field of a message: its number and value.
enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// The fields of one message, in order.
struct Fields<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Fields { data, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .data
                .get(self.pos)
                .ok_or_else(|| Error::Model("truncated varint".into()))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::Model("varint longer than 64 bits".into()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| Error::Model("truncated field".into()))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, Error> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Varint(0)
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| Error::Model("field too long".into()))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            other => return Err(Error::Model(format!("unsupported wire type {other}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn text(bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Model("a piece is not UTF-8".into()))
}

impl ModelProto {
    /// Parses a `.model` file's bytes.
    pub fn parse(data: &[u8]) -> Result<ModelProto, Error> {
        let mut model = ModelProto {
            pieces: Vec::new(),
            model_type: ModelType::Unigram,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let mut fields = Fields::new(data);
        while let Some((number, value)) = fields.next_field()? {
            match (number, value) {
                (1, Value::Bytes(b)) => model.pieces.push(piece(b)?),
                (2, Value::Bytes(b)) => model.trainer_spec(b)?,
                (3, Value::Bytes(b)) => model.normalizer_spec(b)?,
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(Error::Model(
                "no pieces (is this a SentencePiece model?)".into(),
            ));
        }
        Ok(model)
    }

    fn trainer_spec(&mut self, data: &[u8]) -> Result<(), Error> {
        let mut fields = Fields::new(data);
        while let Some((number, value)) = fields.next_field()? {
            match (number, value) {
                (3, Value::Varint(v)) => {
                    self.model_type = match v {
                        1 => ModelType::Unigram,
                        2 => ModelType::Bpe,
                        3 => ModelType::Word,
                        4 => ModelType::Char,
                        other => return Err(Error::Model(format!("unknown model type {other}"))),
                    }
                }
                (24, Value::Varint(v)) => self.treat_whitespace_as_suffix = v != 0,
                (35, Value::Varint(v)) => self.byte_fallback = v != 0,
                _ => {}
            }
        }
        Ok(())
    }

    fn normalizer_spec(&mut self, data: &[u8]) -> Result<(), Error> {
        let mut fields = Fields::new(data);
        while let Some((number, value)) = fields.next_field()? {
            match (number, value) {
                (2, Value::Bytes(b)) => self.precompiled_charsmap = b.to_vec(),
                (3, Value::Varint(v)) => self.add_dummy_prefix = v != 0,
                (4, Value::Varint(v)) => self.remove_extra_whitespaces = v != 0,
                (5, Value::Varint(v)) => self.escape_whitespaces = v != 0,
                _ => {}
            }
        }
        Ok(())
    }
}

fn piece(data: &[u8]) -> Result<Piece, Error> {
    let mut p = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut fields = Fields::new(data);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (1, Value::Bytes(b)) => p.text = text(b)?,
            (2, Value::Fixed32(bits)) => p.score = f32::from_bits(bits),
            (3, Value::Varint(v)) => p.kind = PieceType::from_wire(v)?,
            _ => {}
        }
    }
    Ok(p)
}
