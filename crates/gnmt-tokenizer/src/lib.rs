//! gnmt-tokenizer
