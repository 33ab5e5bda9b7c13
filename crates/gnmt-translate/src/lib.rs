//! gnmt-translate
