//! gnmt-train
