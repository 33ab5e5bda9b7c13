//! gnmt-model
