//! The fitted model's path, shared by the trainer and the server: the forecasters (baselines, elastic
//! net, gradient-boosted trees) and how they fit and predict, the model file that carries a model with
//! its lots' profiles and conformal residuals, and the versioned registry on disk.
//!
//! It needs no DataFrame: scoring takes feature vectors that `parkcast-features` builds (incrementally
//! in serving, in batch in training), so the server links this crate without the training pipeline
//! or polars. Fitting (`model::ForecasterParams`: the elastic net through linfa, the trees'
//! learner) sits behind the `fit` feature, which the trainer enables: the server loads model files
//! and predicts, and links neither solver (`scripts/test.sh` checks).

pub mod artifact;
pub mod model;
pub mod reference;
pub mod registry;
