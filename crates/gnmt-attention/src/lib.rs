//! gnmt-attention
