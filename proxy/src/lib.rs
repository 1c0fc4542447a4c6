//! Switchyard data path.
