//! esso-data
