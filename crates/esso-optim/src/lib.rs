//! esso-optim
